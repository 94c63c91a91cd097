"""Validation of client calls on the embedded store, as the hosted API validates them.

Bad input is a 422 ``APIError`` naming the field (and the item, ``items[3]``); the store's limits
(``api.limits.StoreLimits``) are checked the same way on every write path. Nothing here touches
the SQLite file, so a refused call has written nothing.
"""

from __future__ import annotations

import os
from typing import Any

from longmem_etl.api import localrows
from longmem_etl.api.limits import StoreLimits
from longmem_etl.errors import APIError


def unprocessable(msg: str) -> APIError:
    """The 422 the API answers to invalid input."""
    return APIError(422, msg)


def new_memory_row(
    limits: StoreLimits,
    text: Any,
    *,
    collection: Any,
    importance: Any,
    category: Any,
    metadata: Any,
    source: Any,
    container_tag: Any,
    where: str,
    now: str,
    now_ts: float | None = None,
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """Validate like the server (422 on bad input); a new memory with a fresh id and its row for the
    memories table (``localrows.new_row``), in one pass (``add``; ``add_many`` needs no memory
    dicts and calls `check_new_memory` itself)."""
    metadata_text = check_new_memory(
        limits,
        text,
        collection=collection,
        importance=importance,
        category=category,
        metadata=metadata,
        source=source,
        container_tag=container_tag,
        where=where,
    )
    mem = {
        "id": new_ids(1)[0],
        "collection": collection,
        "text": text,
        "importance": importance,
        "category": category,
        "metadata": metadata if metadata is not None else {},
        "source": source,
        "container_tag": container_tag,
        "pinned": False,
        "archived": False,
        "created_at": now,
        "updated_at": now,
        "expires_at": None,
        "superseded_by": None,
    }
    ts = localrows.to_epoch(now) if now_ts is None else now_ts
    return mem, localrows.new_row(mem, metadata_text, ts)


def check_new_memory(
    limits: StoreLimits,
    text: Any,
    *,
    collection: Any,
    importance: Any,
    category: Any,
    metadata: Any,
    source: Any,
    container_tag: Any,
    where: str,
    metadata_json: str | None = None,
    metadata_size: int | None = None,
) -> str:
    """Validate one new memory like the server (422 naming ``where`` and the field, checks in this
    order); returns its metadata column text.

    The metadata is serialised once, by the validity check, and that text is the stored column.
    ``metadata_json`` / ``metadata_size``: that text and ``limits.json_bytes(metadata)`` when the
    caller already has them (``add_many`` sizes a plain request once, `limits.plain_json`)."""
    if not isinstance(text, str) or not text.strip():
        raise unprocessable(f"{where}: text must be a non-empty string")
    check_limits(limits, where, text=text, metadata=metadata, metadata_size=metadata_size)
    if not isinstance(collection, str) or not collection:
        raise unprocessable(f"{where}: collection must be a non-empty string")
    if (
        isinstance(importance, bool)
        or not isinstance(importance, (int, float))
        or not 0 <= importance <= 1
    ):
        raise unprocessable(f"{where}: importance must be a number between 0 and 1")
    if not isinstance(category, str) or not category:
        raise unprocessable(f"{where}: category must be a non-empty string")
    if metadata is not None and not isinstance(metadata, dict):
        raise unprocessable(f"{where}: metadata must be an object")
    if metadata_json is None:
        try:
            metadata_json = localrows.dumps(metadata if metadata is not None else {})
        except (TypeError, ValueError, OverflowError):
            raise unprocessable(f"{where}: metadata is not valid JSON") from None
    if not isinstance(source, str):
        raise unprocessable(f"{where}: source must be a string")
    if container_tag is not None and not isinstance(container_tag, str):
        raise unprocessable(f"{where}: container_tag must be a string")
    return metadata_json


_V4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # the version nibble uuid4 sets
_RFC = bytes((b & 0x3F) | 0x80 for b in range(256))  # the RFC 4122 variant bits


def new_ids(n: int) -> list[str]:
    """``n`` new memory ids, each what ``str(uuid.uuid4())`` gives (random version-4 UUIDs from
    ``os.urandom``, lowercase and hyphenated): one read of randomness and one hex conversion for
    the batch instead of a ``UUID`` object per id (~5x cheaper per id)."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_V4)
    raw[8::16] = raw[8::16].translate(_RFC)
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def check_limits(
    limits: StoreLimits,
    where: str,
    *,
    text: Any = None,
    metadata: Any = None,
    metadata_size: int | None = None,
) -> None:
    """422 naming the limit when ``text`` or ``metadata`` is over this store's limits
    (``metadata_size``: its ``json_bytes`` when known)."""
    why = (limits.text_problem(text) if isinstance(text, str) else None) or (
        limits.metadata_problem(metadata, metadata_size)
    )
    if why:
        raise unprocessable(f"{where}: {why}")


def check_request(
    limits: StoreLimits, name: str, items: list[Any], payload: Any, size: int | None = None
) -> None:
    """422 when one call carries too many items or too many bytes (``size``: the payload's
    ``json_bytes`` when known)."""
    why = limits.items_problem(len(items)) or limits.request_problem(payload, size)
    if why:
        raise unprocessable(f"{name}: {why}")

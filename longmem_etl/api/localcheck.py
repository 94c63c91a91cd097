"""Validation of client calls on the embedded store, as the hosted API validates them.

Bad input is a 422 ``APIError`` naming the field (and the item, ``items[3]``); the store's limits
(``api.limits.StoreLimits``) are checked the same way on every write path. Nothing here touches
the SQLite file, so a refused call has written nothing.
"""

from __future__ import annotations

import uuid
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
    memories table (``localrows.new_row``), in one pass.

    The metadata is serialised once, by the validity check, and that text is the stored column;
    the general codec (``localrows.encode``) would serialise it again and re-derive what a new
    memory's shape already says (no absent or odd-typed field, canonical key order)."""
    if not isinstance(text, str) or not text.strip():
        raise unprocessable(f"{where}: text must be a non-empty string")
    check_limits(limits, where, text=text, metadata=metadata)
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
    try:
        metadata_text = localrows.dumps(metadata if metadata is not None else {})
    except (TypeError, ValueError, OverflowError):
        raise unprocessable(f"{where}: metadata is not valid JSON") from None
    if not isinstance(source, str):
        raise unprocessable(f"{where}: source must be a string")
    if container_tag is not None and not isinstance(container_tag, str):
        raise unprocessable(f"{where}: container_tag must be a string")
    mem = {
        "id": str(uuid.uuid4()),
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


def check_limits(
    limits: StoreLimits, where: str, *, text: Any = None, metadata: Any = None
) -> None:
    """422 naming the limit when ``text`` or ``metadata`` is over this store's limits."""
    why = (limits.text_problem(text) if isinstance(text, str) else None) or (
        limits.metadata_problem(metadata)
    )
    if why:
        raise unprocessable(f"{where}: {why}")


def check_request(limits: StoreLimits, name: str, items: list[Any], payload: Any) -> None:
    """422 when one call carries too many items or too many bytes."""
    why = limits.items_problem(len(items)) or limits.request_problem(payload)
    if why:
        raise unprocessable(f"{name}: {why}")

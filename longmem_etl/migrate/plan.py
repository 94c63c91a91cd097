"""The migration plan: which payload each source memory becomes, in what order, in which chunk.

Deterministic on purpose: the same frozen source always gives the same payloads, order and chunks,
so a resumed run (or a `--dry-run` before the real one) describes exactly what gets uploaded.

- Order: collection, container_tag, created_at, source id (NULLs first, as text).
- A chunk never spans two collections (``add_many`` takes one collection per call), holds at most
  ``chunk_size`` (<= 100) items and at most ``max_bytes`` of item JSON (an item bigger than the cap
  travels alone; if the server refuses it, bisection dead-letters just that item).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from longmem_etl.errors import BadInput
from longmem_etl.jsonio import exact_float
from longmem_etl.migrate.keys import (
    PROVENANCE_KEY,
    fingerprint,
    payload_fingerprint,
    with_marker,
)

MAX_CHUNK_ITEMS = 100
DEFAULT_MAX_BYTES = 1 << 20  # 1 MiB of item JSON per request
MODES = ("add", "import")

# Fields add_many accepts per item: `add` mode keeps container_tag, importance, category and metadata
# (`docs/migration.md`, "Modes").
ADD_FIELDS = ("text", "metadata", "importance", "category", "source", "container_tag")


@dataclass(frozen=True)
class PlannedItem:
    """One source memory, ready to send: ``payload`` is the exact JSON text of the item."""

    source_id: str
    collection: str
    container_tag: str | None
    sort_key: str
    fp: str
    payload: str
    content: str = ""
    """`keys.payload_fingerprint` of the payload (marker excluded)."""
    size: int | None = None
    """UTF-8 length of ``payload`` when already known."""

    @property
    def nbytes(self) -> int:
        return self.size if self.size is not None else len(self.payload.encode("utf-8"))


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
"""One encoder for every payload (``json.dumps`` with options builds a new one per call)."""


def _encode(obj: Any) -> str:
    return _ENCODER.encode(obj)


def build_payload(
    memory: dict[str, Any], *, mode: str, source_id: str, source_key: str | None
) -> tuple[dict[str, Any], str]:
    """The item as the target receives it, and its content fingerprint (marker excluded).

    ``source_key=None`` means no provenance marker."""
    if mode == "add":
        item = {k: memory[k] for k in ADD_FIELDS if memory.get(k) is not None}
        item.setdefault("text", "")
    elif mode == "import":
        item = dict(memory)
    else:  # pragma: no cover - guarded by argument parsing
        raise BadInput(f"--mode {mode!r}: must be one of {', '.join(MODES)}")
    content = payload_fingerprint(item)
    if source_key is not None:
        item["metadata"] = with_marker(memory.get("metadata"), source_id, source_key, content)
    return item, content


def plan_items(
    memories: Iterable[dict[str, Any]],
    *,
    mode: str,
    source_key: str | None,
    provenance: bool = True,
) -> Iterator[PlannedItem]:
    """Turn dump-form memories into planned items (in input order; `assign_chunks` orders them).

    Duplicate source ids (dirty dumps have them) stay distinct memories: the second becomes
    ``id#2`` so every source memory has one journal row and one provenance marker.
    """
    seen: dict[str, int] = {}
    for memory in memories:
        raw_id = memory.get("id")
        sid = "" if raw_id is None else str(raw_id)
        n = seen.get(sid, 0) + 1
        seen[sid] = n
        if n > 1:
            sid = f"{sid}#{n}"
        yield build_planned(memory, sid, mode=mode, source_key=source_key if provenance else None)


def build_planned(
    memory: dict[str, Any], sid: str, *, mode: str, source_key: str | None
) -> PlannedItem:
    """One dump-form memory (whose source id, duplicate suffix included, is ``sid``) as a planned
    item; ``source_key=None``: no provenance marker."""
    collection = memory.get("collection") or "default"
    tag = memory.get("container_tag")
    payload, content = build_payload(memory, mode=mode, source_id=sid, source_key=source_key)
    text = _encode(payload)
    return PlannedItem(
        source_id=sid,
        collection=str(collection),
        container_tag=None if tag is None else str(tag),
        sort_key=str(memory.get("created_at") or ""),
        fp=fingerprint(collection, tag, memory.get("text")),
        payload=text,
        content=content,
        size=len(text.encode("utf-8")),
    )


def _python_json_number(literal: str) -> msgspec.Raw:
    """A JSON float literal as the bytes ``json.dumps(jsonio.loads(literal), default=str)`` gives:
    ``repr`` of the float, or the quoted text of the ``Decimal`` a double cannot hold. (msgspec
    writes ``1e16`` where Python writes ``1e+16``: the one place the two encoders differ.)"""
    value = exact_float(literal)
    text = repr(value) if isinstance(value, float) else f'"{value}"'
    return msgspec.Raw(text.encode())


_FAST_DECODE = msgspec.json.Decoder(float_hook=_python_json_number).decode
_FAST_ENCODE = msgspec.json.Encoder().encode
_FAST_CANONICAL = msgspec.json.Encoder(order="sorted").encode


def fast_add_row(
    sid: str,
    text: Any,
    metadata: str | None,
    importance: Any,
    category: Any,
    source: Any,
    container_tag: Any,
    *,
    source_key: str | None,
) -> tuple[str, int, str] | None:
    """``(payload, nbytes, content)`` of an ``add``-mode item straight from a snapshot row's
    columns (``metadata`` is its JSON text), byte for byte what `build_payload` + `_encode` give
    for the same memory — at a fraction of the cost (msgspec, one decode of the metadata, floats
    rendered as Python renders them). None when the row needs the general path (no text, a
    float the stdlib would write as ``NaN``)."""
    if not isinstance(text, str):
        return None
    meta = None if metadata is None else _FAST_DECODE(metadata)
    item: dict[str, Any] = {"text": text}
    if meta is not None:
        item["metadata"] = meta
    if importance is not None:
        if isinstance(importance, float):
            if not math.isfinite(importance):
                return None
            item["importance"] = msgspec.Raw(repr(importance).encode())
        else:
            item["importance"] = importance
    if category is not None:
        item["category"] = category
    if source is not None:
        item["source"] = source
    if container_tag is not None:
        item["container_tag"] = container_tag
    if isinstance(meta, dict) and PROVENANCE_KEY in meta:  # payload_fingerprint's rule
        bare = {**item, "metadata": {k: v for k, v in meta.items() if k != PROVENANCE_KEY}}
        canonical = _FAST_CANONICAL(bare)
    else:
        canonical = _FAST_CANONICAL(item)
    content = hashlib.sha256(canonical).hexdigest()[:32]
    if source_key is not None:
        item["metadata"] = with_marker(meta, sid, source_key, content)
    payload = _FAST_ENCODE(item)
    return payload.decode("utf-8"), len(payload), content


def order_key(collection: str, container_tag: str | None, sort_key: str, source_id: str) -> tuple:
    return (collection, container_tag or "", sort_key, source_id)


def assign_chunks(
    rows: Iterable[tuple[str, str, int]],
    *,
    chunk_size: int = MAX_CHUNK_ITEMS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Iterator[tuple[str, int]]:
    """``(source_id, collection, nbytes)`` rows in plan order -> ``(source_id, chunk_no)``.

    Streaming, so a million-item plan never sits in memory twice.
    """
    chunker = Chunker(chunk_size=chunk_size, max_bytes=max_bytes)
    for source_id, collection, nbytes in rows:
        yield source_id, chunker.add(collection, nbytes)


class Chunker:
    """Cuts items arriving in plan order into chunks (the one rule, shared by the plan written
    whole and the plan streamed in batches): a new chunk at a new collection, after
    ``chunk_size`` items, or when the next item would push the JSON array past ``max_bytes``."""

    def __init__(self, *, chunk_size: int = MAX_CHUNK_ITEMS, max_bytes: int = DEFAULT_MAX_BYTES):
        if not 1 <= chunk_size <= MAX_CHUNK_ITEMS:
            raise BadInput(f"--chunk-size {chunk_size}: must be between 1 and {MAX_CHUNK_ITEMS}")
        self.chunk_size, self.max_bytes = chunk_size, max_bytes
        self.no, self.n, self.size, self.current = -1, 0, 0, None
        self._acc: dict[int, list] = {}
        self._closed: list[int] = []

    def add(self, collection: str, nbytes: int) -> int:
        """The chunk number of the next item."""
        if (
            self.no < 0
            or collection != self.current
            or self.n >= self.chunk_size
            or (self.n > 0 and self.size + nbytes + 1 > self.max_bytes)
        ):
            if self.no >= 0:
                self._closed.append(self.no)
            self.no, self.n, self.size, self.current = self.no + 1, 0, 2, collection
            self._acc[self.no] = [collection, 0, 0]
        self.n += 1
        self.size += nbytes + 1
        acc = self._acc[self.no]
        acc[1] += 1
        acc[2] += nbytes
        return self.no

    def closed(self) -> list[tuple[int, str, int, int]]:
        """``(chunk_no, collection, n_items, n_bytes)`` of chunks closed since the last call."""
        out = [(c, *self._acc.pop(c)) for c in self._closed]
        self._closed = []
        return out

    def finish(self) -> list[tuple[int, str, int, int]]:
        """Close the last chunk too (after the last item)."""
        if self.no >= 0 and self.no in self._acc:
            self._closed.append(self.no)
        return self.closed()


@dataclass
class PlanSummary:
    """What a plan will send: per collection items, chunks and bytes (the `--dry-run` output)."""

    mode: str
    chunk_size: int
    max_bytes: int
    collections: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def items(self) -> int:
        return sum(c["items"] for c in self.collections.values())

    @property
    def chunks(self) -> int:
        return sum(c["chunks"] for c in self.collections.values())

    @property
    def bytes(self) -> int:
        return sum(c["bytes"] for c in self.collections.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "chunk_size": self.chunk_size,
            "max_bytes": self.max_bytes,
            "items": self.items,
            "chunks": self.chunks,
            "bytes": self.bytes,
            "collections": self.collections,
        }

    def render(self) -> str:
        lines = [f"{'collection':<30} {'items':>9} {'chunks':>7} {'bytes':>12}"]
        for name, c in sorted(self.collections.items()):
            lines.append(f"{name:<30} {c['items']:>9} {c['chunks']:>7} {c['bytes']:>12}")
        lines.append(f"{'TOTAL':<30} {self.items:>9} {self.chunks:>7} {self.bytes:>12}")
        return "\n".join(lines)


def summarise(
    items: Iterable[PlannedItem],
    *,
    mode: str,
    chunk_size: int = MAX_CHUNK_ITEMS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> PlanSummary:
    """Plan in memory (no journal) and count: what `--dry-run` prints."""
    rows = sorted(
        (
            order_key(i.collection, i.container_tag, i.sort_key, i.source_id),
            i.source_id,
            i.collection,
            i.nbytes,
        )
        for i in items
    )
    summary = PlanSummary(mode=mode, chunk_size=chunk_size, max_bytes=max_bytes)
    sizes = {sid: (coll, nb) for _, sid, coll, nb in rows}
    last_chunk: dict[str, int] = {}
    for sid, chunk_no in assign_chunks(
        ((sid, coll, nb) for _, sid, coll, nb in rows), chunk_size=chunk_size, max_bytes=max_bytes
    ):
        coll, nb = sizes[sid]
        c = summary.collections.setdefault(coll, {"items": 0, "chunks": 0, "bytes": 0})
        c["items"] += 1
        c["bytes"] += nb
        if last_chunk.get(coll) != chunk_no:
            last_chunk[coll] = chunk_no
            c["chunks"] += 1
    return summary

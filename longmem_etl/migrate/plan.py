"""The migration plan: which payload each source memory becomes, in what order, in which chunk.

Deterministic on purpose: the same frozen source always gives the same payloads, order and chunks,
so a resumed run (or a `--dry-run` before the real one) describes exactly what gets uploaded.

- Order: the frozen snapshot's row order (a dump's own order, less rejected rows), so the plan
  can be written while the source is still being frozen.
- A chunk never spans two collections (``add_many`` takes one collection per call), holds at most
  ``chunk_size`` (<= 100) items and at most ``max_bytes`` of item JSON (an item bigger than the cap
  travels alone; if the server refuses it, bisection dead-letters just that item). Each collection
  fills its own open chunk (`Chunker`); inside a chunk, items are sent ordered by container_tag,
  created_at, source id.
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
    """Turn dump-form memories into planned items, in input order (the plan order; `Chunker`
    cuts the chunks).

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
    whole, the plan streamed in batches and ``--dry-run``): each collection has one open chunk;
    an item goes into its collection's open chunk unless that one already holds ``chunk_size``
    items or the item would push its JSON array past ``max_bytes`` (then a new chunk opens).

    Chunks are numbered as they open. A chunk closes as soon as it is full (``chunk_size``
    items), when an item did not fit, or at `finish`: so a streamed plan can hand a chunk to the
    workers while other collections' chunks are still filling, and interleaved collections in
    the source never make small chunks."""

    def __init__(self, *, chunk_size: int = MAX_CHUNK_ITEMS, max_bytes: int = DEFAULT_MAX_BYTES):
        if not 1 <= chunk_size <= MAX_CHUNK_ITEMS:
            raise BadInput(f"--chunk-size {chunk_size}: must be between 1 and {MAX_CHUNK_ITEMS}")
        self.chunk_size, self.max_bytes = chunk_size, max_bytes
        self.opened = 0
        self._open: dict[str, list] = {}  # collection -> [chunk_no, n, json size, item bytes]
        self._closed: list[tuple[int, str, int, int]] = []

    def add(self, collection: str, nbytes: int) -> int:
        """The chunk number of the next item."""
        acc = self._open.get(collection)
        if acc is not None and acc[1] > 0 and acc[2] + nbytes + 1 > self.max_bytes:
            self._close(collection, acc)
            acc = None
        if acc is None:
            acc = self._open[collection] = [self.opened, 0, 2, 0]
            self.opened += 1
        acc[1] += 1
        acc[2] += nbytes + 1
        acc[3] += nbytes
        if acc[1] >= self.chunk_size:
            self._close(collection, acc)
        return acc[0]

    def _close(self, collection: str, acc: list) -> None:
        del self._open[collection]
        self._closed.append((acc[0], collection, acc[1], acc[3]))

    def closed(self) -> list[tuple[int, str, int, int]]:
        """``(chunk_no, collection, n_items, n_bytes)`` of chunks closed since the last call."""
        out, self._closed = self._closed, []
        return out

    def finish(self) -> list[tuple[int, str, int, int]]:
        """Close every open chunk too (after the last item), in the order they opened."""
        for collection, acc in sorted(self._open.items(), key=lambda kv: kv[1][0]):
            self._close(collection, acc)
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
    summary = PlanSummary(mode=mode, chunk_size=chunk_size, max_bytes=max_bytes)
    chunker = Chunker(chunk_size=chunk_size, max_bytes=max_bytes)
    for i in items:
        c = summary.collections.setdefault(i.collection, {"items": 0, "chunks": 0, "bytes": 0})
        c["items"] += 1
        c["bytes"] += i.nbytes
        chunker.add(i.collection, i.nbytes)
    for _chunk_no, coll, _n, _b in chunker.finish():
        summary.collections[coll]["chunks"] += 1
    return summary

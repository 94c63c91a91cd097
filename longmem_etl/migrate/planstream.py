"""The plan written while the upload runs (and, for a dump, while the source is still being
frozen): journaled in batches, fed to the uploader as each batch's chunks become durable.

Same plan as `plan.plan_items` + `Journal.write_plan` (same order, payloads, chunks), made without
holding it all back until the last row is written:

1. *Order.* The plan order is the frozen snapshot's row order, so rows can be planned as they
   come (`BatchPlanner.add`: from the freeze itself, or from the frozen file, `stream_plan`).
   Duplicate ids get their ``#n`` suffix in that order; each row's collection and
   ``created_at`` text (the order of items inside a chunk) are computed column-wise — only rows
   whose fidelity changes one of those keys (each distinct fidelity text decoded once) are looked
   at in Python.
2. *Batches.* Rows are taken a batch at a time (a small first one, `FIRST_BATCH`, so the first
   calls go out within milliseconds, then `BATCH`), turned into payloads column by column
   (`plan.fast_add_row`: msgspec, the metadata decoded once, byte for byte what
   `plan.build_planned` makes of the dump-form memory, which still handles ``import`` mode and
   rows whose fidelity changes a sent value), cut into chunks by the streaming `plan.Chunker`
   (one open chunk per collection), and written in ONE durable transaction (executemany) with
   the rows of every chunk it closed. Items the target already holds (its markers, learned from
   one export before the first batch is written: `holdings`) are written as ``done`` in that same
   transaction.
3. *Feeding.* After the commit, the closed chunks with anything left to send go to the uploader's
   queue. So a chunk is sent only once its plan rows are durable — the same guarantee as a plan
   written whole — and a run killed while planning leaves an unfinished plan (``planned`` unset):
   the next run plans afresh and first learns from the target's markers what already landed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmem_etl import jsonio
from longmem_etl.arrays import strings
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.keys import fingerprint
from longmem_etl.migrate.plan import (
    ADD_FIELDS,
    Chunker,
    PlannedItem,
    build_planned,
    fast_add_row,
)

BATCH = int(os.environ.get("LONGMEM_ETL_PLAN_BATCH", "5000"))
"""Items per durable plan transaction (tests lower it to see a plan that is still being written)."""
FIRST_BATCH = 1000
"""The first transaction: enough chunks to fill the pipe at once (8 workers x 100 items)."""
MAX_WAITING = 50_000
"""Rows kept back while the target's markers are still being read; past it the planner waits for
them (and so does the freeze feeding it), so a slow read never holds the whole source in memory."""
KEY_COLUMNS = ("id", "collection", "container_tag", "created_at", "fidelity")

Held = dict[str, tuple[str | None, int, str | None]]


class SourceIds:
    """Source ids in plan order: a row's id, or ``id#n`` for the n-th row with the same id
    (``""`` for a missing one), so every row has one journal row and one marker."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def of(self, id_col: pa.Array | pa.ChunkedArray) -> list[str]:
        ids = id_col.to_pylist()
        seen = self._seen
        if id_col.null_count == 0 and seen.keys().isdisjoint(ids):
            fresh = dict.fromkeys(ids, 1)
            if len(fresh) == len(ids):  # the usual case: every id once (convert rejects duplicates)
                seen.update(fresh)
                return ids
        out = []
        for raw in ids:
            sid = "" if raw is None else str(raw)
            k = seen.get(sid, 0) + 1
            seen[sid] = k
            out.append(sid if k == 1 else f"{sid}#{k}")
        return out


def row_keys(rows: pa.Table) -> pa.Table:
    """Per row: its plan collection ``c`` (``default`` for none) and ``created_at`` text ``k``,
    as `plan.build_planned` reads them from the dump-form memory."""
    from longmem_etl.snapshots.reader import timestamp_text

    n = rows.num_rows
    coll = pc.fill_null(rows.column("collection"), "")
    tag = pc.fill_null(rows.column("container_tag"), "")
    created = pc.fill_null(timestamp_text(rows.column("created_at")), "")
    fids = rows.column("fidelity")
    if fids.null_count < n:
        touched = [f for f in pc.unique(fids).to_pylist() if f is not None and _moves_keys(f)]
        if touched:
            coll, tag, created = _fix_keys(fids, pa.array(touched, pa.string()), coll, tag, created)
    return pa.table({"c": pc.if_else(pc.equal(coll, ""), "default", coll), "k": created})


_KEY_FIELDS = frozenset({"collection", "container_tag", "created_at"})


def _moves_keys(fidelity: str) -> bool:
    """True when a fidelity text changes a sort key (see `_fix_keys`)."""
    from longmem_etl.snapshots.reader import FIDELITY_DECODER

    fid = FIDELITY_DECODER.decode(fidelity)
    return not _KEY_FIELDS.isdisjoint(fid.absent) or "created_at" in fid.raw


def _fix_keys(fids, touched: pa.Array, coll, tag, created):
    """The sort keys of rows whose fidelity names an absent key field (its key is empty) or a raw
    created_at (the original JSON value, as text)."""
    from longmem_etl.snapshots.reader import FIDELITY_DECODER

    rows = pc.indices_nonzero(pc.is_in(fids, value_set=touched)).to_pylist()
    coll, tag, created = coll.to_pylist(), tag.to_pylist(), created.to_pylist()
    fid_list = fids.take(pa.array(rows, pa.int64())).to_pylist()
    for i, f in zip(rows, fid_list, strict=True):
        fid = FIDELITY_DECODER.decode(f)
        for name in fid.absent:
            if name == "collection":
                coll[i] = ""
            elif name == "container_tag":
                tag[i] = ""
            elif name == "created_at":
                created[i] = ""
        raw = fid.raw.get("created_at")
        if raw is not None:
            created[i] = str(jsonio.loads(bytes(raw)) or "")
    return strings(coll), strings(tag), strings(created)


@dataclass
class StreamedPlan:
    """What the streaming planner did (for timings and the holdings report)."""

    items: int = 0
    chunks: int = 0
    held: int = 0
    with_copies: int = 0
    changed: int = 0
    seconds: float = 0.0
    batches: int = 0
    fed: list[int] = field(default_factory=list, repr=False)


class BatchPlanner:
    """Plans rows of the frozen snapshot as they come (`add`, in the snapshot's row order), one
    durable transaction per batch; `finish` closes the last chunks and marks the plan done.

    ``held``: what the target already holds under this source key (source id -> (target id of
    the oldest copy, copies, landed content)), or a ``ready()``/``result()`` object that answers
    it later (`engine.HoldingsRead`): rows are kept back until it has answered, so nothing is
    written — let alone sent — before the target's markers are known. ``put(chunk_no)`` each
    closed chunk with something left to send, right after the batch holding it commits."""

    def __init__(
        self,
        journal: Journal,
        *,
        mode: str,
        source_key: str | None,
        chunk_size: int,
        max_bytes: int,
        held: Held | Any | None = None,
        put: Callable[[int], None] | None = None,
        report: StreamedPlan | None = None,
    ) -> None:
        self.journal, self.mode, self.source_key, self.put = journal, mode, source_key, put
        self.report = report or StreamedPlan()
        held = {} if held is None else held
        self._held_source = held
        self._held: Held | None = held if isinstance(held, dict) else None
        self._chunker = Chunker(chunk_size=chunk_size, max_bytes=max_bytes)
        self._ids = SourceIds()
        self._waiting: list[pa.Table] = []
        self._seq = 0
        self._started = time.monotonic()
        self._busy = 0.0
        journal.begin_plan()

    def add(self, rows: pa.Table | pa.RecordBatch) -> None:
        """Plan these rows (the next ones in plan order)."""
        t0 = time.monotonic()
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
        if self._held is None:
            waiting = sum(t.num_rows for t in self._waiting) + table.num_rows
            if not self._held_source.ready() and waiting <= MAX_WAITING:
                self._waiting.append(table)  # the target's markers are not known yet
                self._busy += time.monotonic() - t0
                return
            self._held = self._held_source.result()
        waiting, self._waiting = self._waiting, []
        for part in [*waiting, table]:
            self._write(part)
        self._busy += time.monotonic() - t0

    def finish(self) -> StreamedPlan:
        """After the last row: close every open chunk, mark the plan finished."""
        t0 = time.monotonic()
        if self._held is None:
            self._held = self._held_source.result()
        waiting, self._waiting = self._waiting, []
        for part in waiting:
            self._write(part)
        closed = self._chunker.finish()
        self._commit([], closed, [], finished=True)
        out = self.report
        out.seconds = self._busy + time.monotonic() - t0
        return out

    def _write(self, table: pa.Table) -> None:
        start = 0
        while start < table.num_rows:
            size = BATCH if self._seq else min(FIRST_BATCH, BATCH)
            self._write_batch(table.slice(start, size))
            start += size

    def _write_batch(self, rows: pa.Table) -> None:
        out, held = self.report, self._held
        assert held is not None
        sids = self._ids.of(rows.column("id"))
        planned = _plan_rows(rows, row_keys(rows), sids, self.mode, self.source_key)
        items: list[tuple] = []
        changed: list[tuple] = []
        chunker, seq = self._chunker, self._seq
        for sid, coll, tag, sort_key, fp, nbytes, payload, content in planned:
            chunk_no = chunker.add(coll, nbytes)
            hit = held.get(sid)
            state, tid = "planned", None
            if hit is not None:
                tid, copies, landed = hit
                state = "done"
                out.held += 1
                out.with_copies += int(copies > 1)
                if landed is not None and content and landed != content:
                    changed.append((sid, tid, coll, landed, content))
            items.append(
                (sid, seq, chunk_no, coll, tag, sort_key, fp, nbytes, payload, content, state, tid)
            )
            seq += 1
        self._seq = seq
        out.items += len(items)
        out.changed += len(changed)
        self._commit(items, chunker.closed(), changed, finished=False)

    def _commit(self, items, closed, changed, *, finished: bool) -> None:
        out = self.report
        # chunk rows in number order: write_plan_batch looks at the range they span
        closed = sorted(closed)
        open_chunks = self.journal.write_plan_batch(items, closed, changed, finished=finished)
        out.chunks += len(closed)
        out.batches += bool(items)
        for chunk_no in open_chunks:
            out.fed.append(chunk_no)
            if self.put is not None:
                self.put(chunk_no)


def stream_plan(
    journal: Journal,
    memories_path: Path,
    *,
    mode: str,
    source_key: str | None,
    chunk_size: int,
    max_bytes: int,
    held: Held | None = None,
    put: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    report: StreamedPlan | None = None,
) -> StreamedPlan:
    """Write the plan of an already frozen snapshot (``memories_path``) in durable batches (see
    `BatchPlanner`). Stops early (plan left unfinished) when ``stop`` is set."""
    t0 = time.monotonic()
    planner = BatchPlanner(
        journal,
        mode=mode,
        source_key=source_key,
        chunk_size=chunk_size,
        max_bytes=max_bytes,
        held=held or {},
        put=put,
        report=report,
    )
    for batch in pq.ParquetFile(memories_path).iter_batches(batch_size=BATCH):
        if stop is not None and stop.is_set():
            planner.report.seconds = time.monotonic() - t0
            return planner.report
        planner.add(batch)
    out = planner.finish()
    # Arrow's allocator keeps freed pages for reuse; hand the snapshot's back before the
    # verification export needs the room.
    pa.default_memory_pool().release_unused()
    out.seconds = time.monotonic() - t0
    return out


def planned_items(
    memories_path: Path, *, mode: str, source_key: str | None
) -> Iterator[PlannedItem]:
    """The plan of a frozen snapshot (``memories_path``) in plan order, with no journal: the rows
    `stream_plan` would write, made the same column-wise way (`_plan_rows`), for `--dry-run`."""
    ids = SourceIds()
    for batch in pq.ParquetFile(memories_path).iter_batches(batch_size=BATCH):
        rows = pa.Table.from_batches([batch])
        sids = ids.of(rows.column("id"))
        for sid, coll, tag, sort_key, fp, nbytes, payload, content in _plan_rows(
            rows, row_keys(rows), sids, mode, source_key
        ):
            yield PlannedItem(
                source_id=sid,
                collection=coll,
                container_tag=tag,
                sort_key=sort_key,
                fp=fp,
                payload=payload,
                content=content,
                size=nbytes,
            )


_ADD_VALUES = frozenset(ADD_FIELDS)


def _needs_dump_form(fidelity: str | None) -> bool:
    """True when a row's fidelity changes what ``add`` sends: an original value of a field the
    payload carries (an integer ``importance``, say), or no ``text``. An absent field reads as
    NULL in its column, which the payload drops just as it drops an absent key; collection and
    created_at are settled by `row_keys`."""
    if fidelity is None:
        return False
    from longmem_etl.snapshots.reader import FIDELITY_DECODER

    fid = FIDELITY_DECODER.decode(fidelity)
    return "text" in fid.absent or not _ADD_VALUES.isdisjoint(fid.raw)


def _plan_rows(
    rows: pa.Table, keys: pa.Table, sids: list[str], mode: str, source_key: str | None
) -> list[tuple]:
    """``(source_id, collection, container_tag, sort_key, fp, nbytes, payload, content)`` of each
    row (in the given order), exactly what `plan.build_planned` makes of its dump-form memory.

    ``add`` rows whose typed columns say everything (no ``fidelity``) are built column-wise
    (`plan.fast_add_row`: no dump dict per row); the rest, and every ``import`` row, go through
    the dump form (`batch_to_dump_memories`) and `build_planned`."""
    from longmem_etl.snapshots.reader import batch_to_dump_memories

    n = rows.num_rows
    if not n:
        return []
    coll = keys.column("c").to_pylist()
    tag = rows.column("container_tag").to_pylist()
    sort_key = keys.column("k").to_pylist()
    out: list[tuple | None] = [None] * n
    slow = list(range(n))
    if mode == "add":
        fid = rows.column("fidelity")
        slow = []
        if fid.null_count < n:
            seen: dict[str, bool] = {}  # rows share a few fidelity texts (the absent fields)
            for i, f in enumerate(fid.to_pylist()):
                if f is not None:
                    hit = seen.get(f)
                    if hit is None:
                        hit = seen[f] = _needs_dump_form(f)
                    if hit:
                        slow.append(i)
        is_slow = set(slow)
        cols = [
            rows.column(c).to_pylist()
            for c in ("text", "metadata", "importance", "category", "source")
        ]
        for i, (text, meta, imp, cat, src) in enumerate(zip(*cols, strict=True)):
            if i in is_slow:
                continue
            built = fast_add_row(sids[i], text, meta, imp, cat, src, tag[i], source_key=source_key)
            if built is None:
                slow.append(i)
                continue
            payload, nbytes, content = built
            out[i] = (
                sids[i],
                coll[i],
                tag[i],
                sort_key[i],
                fingerprint(coll[i], tag[i], text),
                nbytes,
                payload,
                content,
            )
    if slow:
        slow.sort()
        part = rows.take(pa.array(slow, pa.int64())).combine_chunks()
        mems = batch_to_dump_memories(part.to_batches()[0]) if part.num_rows else []
        for i, mem in zip(slow, mems, strict=True):
            item = build_planned(mem, sids[i], mode=mode, source_key=source_key)
            out[i] = (
                item.source_id,
                item.collection,
                item.container_tag,
                item.sort_key,
                item.fp,
                item.nbytes,
                item.payload,
                item.content,
            )
    return out  # type: ignore[return-value]


def held_by_marker(
    target_keys: pa.Table, source_key: str
) -> dict[str, tuple[str | None, int, str | None]]:
    """source id -> (oldest copy's target id, copies, landed content) for every target memory
    carrying this source key's marker (the same rule as `holdings.which_held`)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("t", target_keys)
        rows = con.execute(
            """
            SELECT prov_source_id, arg_min(target_id, (created_at, target_id)) AS target_id,
                   count(*) AS copies,
                   arg_min(prov_content, (created_at, target_id)) AS landed
            FROM (SELECT prov_source_id, prov_key, prov_content, target_id,
                         coalesce(created_at, chr(1114111)) AS created_at FROM t)
            WHERE prov_key = $key AND prov_source_id IS NOT NULL
            GROUP BY prov_source_id
            """,
            {"key": source_key},
        ).fetchall()
    finally:
        con.close()
    return {sid: (tid, copies, landed) for sid, tid, copies, landed in rows}

"""The plan written while the upload runs: sorted once in Arrow, journaled in batches, fed to the
uploader as each batch's chunks become durable.

Same plan as `plan.plan_items` + `Journal.write_plan` (same order, payloads, chunks), made without
holding it all back until the last row is written:

1. *Order, vectorised.* Only the key columns of the frozen snapshot are read (id, collection,
   container_tag, created_at, fidelity); duplicate ids get their ``#n`` suffix in snapshot order,
   and one Arrow sort gives the plan order (collection, container_tag, created_at as the dump
   writes it, source id) — rows whose fidelity changes one of those keys are rendered exactly in
   Python, the rest with Arrow kernels.
2. *Batches in plan order.* The memories table is read once; each batch of rows (`BATCH`) is taken in
   plan order, turned into payloads (`plan.build_planned`), cut into chunks by the streaming
   `plan.Chunker`, and written in ONE durable transaction (executemany) with the rows of every
   chunk it closed. Items the target already holds (its markers, learned from one export before
   the first batch: `holdings`) are written as ``done`` in that same transaction.
3. *Feeding.* After the commit, the closed chunks with anything left to send go to the uploader's
   queue. So a chunk is sent only once its plan rows are durable — the same guarantee as a plan
   written whole — and a run killed while planning leaves an unfinished plan (``planned`` unset):
   the next run plans afresh and first learns from the target's markers what already landed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmem_etl import jsonio
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.plan import Chunker, PlannedItem, build_planned

BATCH = int(os.environ.get("LONGMEM_ETL_PLAN_BATCH", "5000"))
"""Items per durable plan transaction (tests lower it to see a plan that is still being written)."""
FIRST_BATCH = 1000
"""The first transaction: enough chunks to fill the pipe at once (8 workers x 100 items)."""
KEY_COLUMNS = ("id", "collection", "container_tag", "created_at", "fidelity")


def plan_order(memories_path: Path) -> tuple[pa.Array, list[str]]:
    """``(row indices in plan order, source id of every row)`` for a snapshot's memories file."""
    from longmem_etl.snapshots.reader import FIDELITY_DECODER, render_timestamps

    keys = pq.read_table(memories_path, columns=list(KEY_COLUMNS))
    ids = keys.column("id").to_pylist()
    seen: dict[str, int] = {}
    sids: list[str] = []
    for raw in ids:
        sid = "" if raw is None else str(raw)
        n = seen.get(sid, 0) + 1
        seen[sid] = n
        sids.append(sid if n == 1 else f"{sid}#{n}")
    coll = pc.fill_null(keys.column("collection"), "")
    tag = pc.fill_null(keys.column("container_tag"), "")
    created = render_timestamps(keys.column("created_at"))
    fids = keys.column("fidelity")
    if fids.null_count < len(fids):
        coll = coll.to_pylist()
        tag = tag.to_pylist()
        for i, f in enumerate(fids.to_pylist()):
            if f is None:
                continue
            fid = FIDELITY_DECODER.decode(f)
            for name in fid.absent:
                if name == "collection":
                    coll[i] = ""
                elif name == "container_tag":
                    tag[i] = ""
                elif name == "created_at":
                    created[i] = None
            raw = fid.raw.get("created_at")
            if raw is not None:
                created[i] = jsonio.loads(bytes(raw))
    table = pa.table(
        {
            "c": pc.if_else(pc.equal(coll, ""), "default", coll)
            if not isinstance(coll, list)
            else [c or "default" for c in coll],
            "t": tag,
            "k": [str(c or "") for c in created],
            "s": sids,
            "i": pa.array(range(len(sids)), pa.int64()),
        }
    )
    order = table.sort_by(
        [("c", "ascending"), ("t", "ascending"), ("k", "ascending"), ("s", "ascending")]
    )
    return order.column("i").combine_chunks(), sids


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


def stream_plan(
    journal: Journal,
    memories_path: Path,
    *,
    mode: str,
    source_key: str | None,
    chunk_size: int,
    max_bytes: int,
    held: dict[str, tuple[str | None, int, str | None]] | None = None,
    put: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    report: StreamedPlan | None = None,
) -> StreamedPlan:
    """Write the plan for ``memories_path`` in durable batches; ``put(chunk_no)`` each closed chunk
    with something left to send, right after the batch holding it commits.

    ``held``: source id -> (target id of the oldest copy, copies, landed content) for items the
    target already holds under this source key; written as ``done`` (and ``changed`` when the
    landed content differs). Stops early (plan left unfinished) when ``stop`` is set."""
    import time

    from longmem_etl.snapshots.reader import batch_to_dump_memories

    t0 = time.monotonic()
    out = report or StreamedPlan()
    held = held or {}
    order, sids = plan_order(memories_path)
    table = pq.read_table(memories_path)
    journal.begin_plan()
    chunker = Chunker(chunk_size=chunk_size, max_bytes=max_bytes)
    seq = 0
    for start, size in _batches(len(order)):
        if stop is not None and stop.is_set():
            out.seconds = time.monotonic() - t0
            return out
        idx = order.slice(start, size)
        rows = table.take(idx)
        mems = (
            batch_to_dump_memories(rows.combine_chunks().to_batches()[0]) if rows.num_rows else []
        )
        items: list[tuple] = []
        changed: list[tuple] = []
        for pos, mem in zip(idx.to_pylist(), mems, strict=True):
            item = build_planned(mem, sids[pos], mode=mode, source_key=source_key)
            chunk_no = chunker.add(item.collection, item.nbytes)
            hit = held.get(item.source_id)
            state, tid = "planned", None
            if hit is not None:
                tid, copies, landed = hit
                state = "done"
                out.held += 1
                out.with_copies += int(copies > 1)
                if landed is not None and item.content and landed != item.content:
                    changed.append((item.source_id, tid, item.collection, landed, item.content))
            items.append(_row(item, seq, chunk_no, state, tid))
            seq += 1
        closed = chunker.closed()
        last = len(order) <= start + size
        if last:
            closed += chunker.finish()
        open_chunks = journal.write_plan_batch(items, closed, changed, finished=last)
        out.items += len(items)
        out.chunks += len(closed)
        out.changed += len(changed)
        out.batches += 1
        for chunk_no in open_chunks:
            out.fed.append(chunk_no)
            if put is not None:
                put(chunk_no)
    if not len(order):
        journal.write_plan_batch([], [], [], finished=True)
    del table
    # Arrow's allocator keeps freed pages for reuse; hand the snapshot's back before the
    # verification export (the run's biggest allocation) needs the room.
    pa.default_memory_pool().release_unused()
    out.seconds = time.monotonic() - t0
    return out


def _batches(n: int) -> list[tuple[int, int]]:
    """``(start, size)`` of each plan batch: a small first one (`FIRST_BATCH`), so the first calls
    go out within milliseconds, then `BATCH`."""
    out, start = [], 0
    size = min(FIRST_BATCH, BATCH)
    while start < n:
        out.append((start, size))
        start += size
        size = BATCH
    return out


def _row(item: PlannedItem, seq: int, chunk_no: int, state: str, tid: str | None) -> tuple:
    return (
        item.source_id,
        seq,
        chunk_no,
        item.collection,
        item.container_tag,
        item.sort_key,
        item.fp,
        item.nbytes,
        item.payload,
        item.content,
        state,
        tid,
    )


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

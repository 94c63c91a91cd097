"""The plan written while the upload runs: sorted once in Arrow, journaled in batches, fed to the
uploader as each batch's chunks become durable.

Same plan as `plan.plan_items` + `Journal.write_plan` (same order, payloads, chunks), made without
holding it all back until the last row is written:

1. *Order, vectorised.* Only the key columns of the frozen snapshot are read (id, collection,
   container_tag, created_at, fidelity); duplicate ids get their ``#n`` suffix in snapshot order,
   and one Arrow sort gives the plan order (collection, container_tag, created_at as the dump
   writes it, source id) — only rows whose fidelity changes one of those keys (each distinct
   fidelity text decoded once) are looked at in Python, the rest is Arrow kernels.
2. *Batches in plan order.* The memories table is read once; each batch of rows (`BATCH`) is taken in
   plan order, turned into payloads column by column (`plan.fast_add_row`: msgspec, the metadata
   decoded once, byte for byte what `plan.build_planned` makes of the dump-form memory, which
   still handles ``import`` mode and rows whose fidelity changes a sent value), cut into chunks by the streaming
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmem_etl import jsonio
from longmem_etl.arrays import int64s, strings
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.keys import fingerprint
from longmem_etl.migrate.plan import ADD_FIELDS, Chunker, build_planned, fast_add_row

BATCH = int(os.environ.get("LONGMEM_ETL_PLAN_BATCH", "5000"))
"""Items per durable plan transaction (tests lower it to see a plan that is still being written)."""
FIRST_BATCH = 1000
"""The first transaction: enough chunks to fill the pipe at once (8 workers x 100 items)."""
KEY_COLUMNS = ("id", "collection", "container_tag", "created_at", "fidelity")


def plan_order(memories_path: Path) -> tuple[pa.Array, list[str], pa.Table]:
    """``(row indices in plan order, source id of every row, keys)`` for a snapshot's memories
    file; ``keys`` has per row (in file order) its plan collection ``c`` and sort key ``k``.

    Column-wise: only rows whose fidelity changes a sort key (an absent collection, tag or
    created_at, a created_at kept raw) are looked at one by one — the distinct fidelity texts are
    decoded once each."""
    from longmem_etl.snapshots.reader import timestamp_text

    keys = pq.read_table(memories_path, columns=list(KEY_COLUMNS))
    n = keys.num_rows
    id_col = keys.column("id")
    ids = id_col.to_pylist()
    if id_col.null_count == 0 and pc.count_distinct(id_col).as_py() == n:
        sids: list[str] = ids  # the usual case: every id once (convert rejects duplicates)
        s_col = id_col
    else:
        seen: dict[str, int] = {}
        sids = []
        for raw in ids:
            sid = "" if raw is None else str(raw)
            k = seen.get(sid, 0) + 1
            seen[sid] = k
            sids.append(sid if k == 1 else f"{sid}#{k}")
        s_col = strings(sids)
    coll = pc.fill_null(keys.column("collection"), "")
    tag = pc.fill_null(keys.column("container_tag"), "")
    created = pc.fill_null(timestamp_text(keys.column("created_at")), "")
    fids = keys.column("fidelity")
    if fids.null_count < n:
        touched = [f for f in pc.unique(fids).to_pylist() if f is not None and _moves_keys(f)]
        if touched:
            coll, tag, created = _fix_keys(fids, pa.array(touched, pa.string()), coll, tag, created)
    table = pa.table(
        {
            "c": pc.if_else(pc.equal(coll, ""), "default", coll),
            "t": tag,
            "k": created,
            "s": s_col,
            "i": int64s(np.arange(n, dtype=np.int64)),
        }
    )
    order = table.sort_by(
        [("c", "ascending"), ("t", "ascending"), ("k", "ascending"), ("s", "ascending")]
    )
    return order.column("i").combine_chunks(), sids, table.select(["c", "k"])


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

    t0 = time.monotonic()
    out = report or StreamedPlan()
    held = held or {}
    order, sids, keys = plan_order(memories_path)
    table = pq.read_table(memories_path)
    journal.begin_plan()
    chunker = Chunker(chunk_size=chunk_size, max_bytes=max_bytes)
    seq = 0
    for start, size in _batches(len(order)):
        if stop is not None and stop.is_set():
            out.seconds = time.monotonic() - t0
            return out
        idx = order.slice(start, size)
        planned = _plan_rows(
            table.take(idx), keys.take(idx), [sids[p] for p in idx.to_pylist()], mode, source_key
        )
        items: list[tuple] = []
        changed: list[tuple] = []
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


_ADD_VALUES = frozenset(ADD_FIELDS)


def _needs_dump_form(fidelity: str | None) -> bool:
    """True when a row's fidelity changes what ``add`` sends: an original value of a field the
    payload carries (an integer ``importance``, say), or no ``text``. An absent field reads as
    NULL in its column, which the payload drops just as it drops an absent key; collection and
    created_at are settled by `plan_order`."""
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

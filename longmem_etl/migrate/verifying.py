"""Verification and outputs, for `migrate` (a journal's plan) and the standalone ``verify`` verb.

Both read the target once through `targetread.read_target_keys` (paged, keys in Arrow, markers
pulled out by DuckDB) and count with `verify.compare` (one DuckDB query). After a migration the
plan's items are read from the journal ONCE, as Arrow columns: they are the source side of the
comparison and, with the target ids the comparison found, the id map — so the outputs are written
from tables already in hand, not by walking the journal again row by row.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.arrays import int64s_with_nulls, strings
from longmem_etl.memory import use_lean_arrow_pool
from longmem_etl.migrate import source as sources
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.keys import fingerprint
from longmem_etl.migrate.targetread import read_target_keys
from longmem_etl.migrate.verify import SOURCE_KEYS, VerificationReport, compare
from longmem_etl.migrate.verifyprep import PreparedVerification, narrow_columns

ID_MAP = pa.schema(
    [
        ("source_id", pa.string()),
        ("target_id", pa.string()),
        ("collection", pa.string()),
        ("container_tag", pa.string()),
        ("chunk", pa.int64()),
        ("state", pa.string()),
    ]
)
_ITEMS = pa.schema([*ID_MAP, ("fp", pa.string())])


def source_key_of(source: str, *, copy: str | None = None, key_env: str = DEFAULT_KEY_ENV) -> str:
    """The key this source's markers carry (what `migrate` would use, with the same ``copy``)."""
    return sources.source_key(sources.stable_source_identity(source, key_env=key_env), copy)


def verify_source_target(
    source: str,
    target: str,
    *,
    spec: str | None = None,
    migration_id: str | None = None,
    scoped: bool = False,
    copy: str | None = None,
    foreign_copies: bool | None = None,
    source_key_env: str = DEFAULT_KEY_ENV,
    target_key_env: str = DEFAULT_KEY_ENV,
) -> VerificationReport:
    """Freeze ``source`` (temporarily; cleaned with ``spec`` if given), read ``target`` once and
    compare per collection and container tag.

    ``scoped`` (or an explicit source key in ``migration_id``) limits the check to this source:
    unrelated target memories are not "extra", while copies of source memories made under any other
    key (another copy name, an older version's markers) still count as duplicated — unless
    ``foreign_copies=False``. Plain (unscoped) verify counts every target memory."""
    use_lean_arrow_pool()  # the target read's Arrow bursts: see `memory`
    target_api = sources.open_target(target, key_env=target_key_env, create=False)
    if scoped and migration_id is None:
        migration_id = source_key_of(source, copy=copy, key_env=source_key_env)
    if foreign_copies is None:
        foreign_copies = copy is None
    with sources.frozen_temporarily(source, spec=spec, key_env=source_key_env) as frozen:
        skeys = snapshot_source_keys(frozen.path)
    keys = read_target_keys(target_api, own_key=migration_id, detail=False)
    return compare(skeys, keys, migration_id=migration_id, foreign_copies=foreign_copies)


def snapshot_source_keys(path: Path) -> pa.Table:
    """`verify.SOURCE_KEYS` of a snapshot's memories, from its key columns only (the same keys
    `verify.source_keys` gives for its dump-form memories; duplicate ids get ``#n`` as planned)."""
    from longmem_etl.snapshots import open_snapshot

    cols = ["id", "collection", "container_tag", "text"]
    table = pq.read_table(open_snapshot(path).memories_path, columns=cols)
    ids, colls, tags, texts = (table.column(c).to_pylist() for c in cols)
    del table
    seen: dict[str, int] = {}
    sids: list[str] = []
    fps: list[str] = []
    for i, raw in enumerate(ids):
        sid = "" if raw is None else str(raw)
        n = seen.get(sid, 0) + 1
        seen[sid] = n
        sids.append(sid if n == 1 else f"{sid}#{n}")
        colls[i] = colls[i] or "default"
        fps.append(fingerprint(colls[i], tags[i], texts[i]))
        texts[i] = None
    return pa.Table.from_arrays(
        [strings(sids), strings(colls), strings(tags), strings(fps)], schema=SOURCE_KEYS
    )


def plan_items(journal: Journal) -> pa.Table:
    """Every planned item of the journal as Arrow columns (one read, in plan order, a batch of
    Python rows at a time)."""
    parts = [_items_of(rows) for rows in journal.item_batches()]
    return pa.concat_tables(parts) if parts else _ITEMS.empty_table()


def _items_of(rows: list[tuple]) -> pa.Table:
    """Journal rows ``(source_id, target_id, collection, tag, fp, chunk, state)`` -> `_ITEMS`."""
    sid, tid, coll, tag, fp, chunk, state = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [
            strings(sid),
            strings(tid),
            strings(coll),
            strings(tag),
            int64s_with_nulls(chunk),
            strings(state),
            strings(fp),
        ],
        schema=_ITEMS,
    )


def _items_from(fixed: pa.Table, narrow: pa.Table) -> pa.Table | None:
    """`_ITEMS` from the prepared fixed columns and the narrow read made at the end, or None
    when they do not describe the same rows (the plan grew after the preparation)."""
    if fixed.num_rows != narrow.num_rows:
        return None
    return pa.Table.from_arrays(
        [
            fixed.column("source_id"),
            narrow.column("target_id"),
            fixed.column("collection"),
            fixed.column("container_tag"),
            fixed.column("chunk"),
            narrow.column("state"),
            fixed.column("fp"),
        ],
        schema=_ITEMS,
    )


def _prepared_items(journal: Journal, prep: PreparedVerification) -> pa.Table:
    """`_ITEMS`: the prepared fixed columns + the narrow read; the journal read whole when the
    preparation failed or was made before the plan was finished."""
    try:
        fixed = prep.fixed_columns()
    except Exception:  # noqa: BLE001 - e.g. the journal was busy: the whole read still works
        return plan_items(journal)
    items = _items_from(fixed, narrow_columns(journal.path))
    return plan_items(journal) if items is None else items


def verify_journal(
    journal: Journal,
    target: Any,
    *,
    migration_id: str,
    stop: threading.Event | None = None,
    foreign_copies: bool = True,
    max_retries: int = 30,
    give_up_after: float | None = None,
    prepared: PreparedVerification | None = None,
    target_keys: pa.Table | None = None,
    meanwhile: Callable[[pa.Table], None] | None = None,
    target_done: Callable[[], None] | None = None,
) -> VerificationReport:
    """Compare everything the plan holds with one read of the WHOLE target (copies made under
    another key or by an older version count as duplicates with ``foreign_copies``); record the
    target ids found through markers that the journal did not know yet. ``migration_id`` is the
    source key. The report's ``id_map`` is the plan's items with those ids filled in.

    ``prepared``: what was made while the upload ran (`verifyprep`; made here otherwise, in a
    thread, while the target is read). ``target_keys``: a whole read of the target that nothing
    was sent after (`uploader.Uploader.settled_keys`), used instead of reading it again.
    ``meanwhile(id_map)``: the caller's own work that needs neither the target nor the
    comparison (e.g. writing the dead letters, or the id map as the journal has it: `ID_MAP`),
    run here while the target read is out. ``report.ids_found`` says whether verification then
    filled in ids that map did not have. ``target_done()``: called once the target is no longer
    needed (its keys are read), before the comparison, e.g. to close it meanwhile."""
    provenance = (journal.get("options") or {}).get("provenance", True)
    mig = migration_id if provenance else None
    t0 = time.monotonic()
    prep = prepared if prepared is not None else PreparedVerification(journal.path)
    try:
        con = prep.connection()
        keys, items, timings = _read_both(
            journal,
            target,
            prep,
            con,
            target_keys,
            mig,
            stop,
            max_retries,
            give_up_after,
            meanwhile,
        )
        if target_done is not None:
            target_done()
        timings["target_read"] = time.monotonic() - t0
        t1 = time.monotonic()
        need_pairs = items.column("target_id").null_count > 0
        report = compare(
            items, keys, migration_id=mig, foreign_copies=foreign_copies, con=con, pairs=need_pairs
        )
    finally:
        prep.close()
    del keys
    t2 = time.monotonic()
    id_map, found = _fill_ids(items, report.id_pairs)
    del items
    if found.num_rows:
        journal.set_target_ids(
            zip(found["source_id"].to_pylist(), found["target_id"].to_pylist(), strict=True)
        )
    report.id_map = id_map
    report.ids_found = found.num_rows
    report.timings = {**timings, "compare": t2 - t1, "ids": time.monotonic() - t2}
    report.timings["prepared"] = prep.seconds
    report.target_read = "settled" if target_keys is not None else "read"
    return report


def _read_both(
    journal: Journal,
    target: Any,
    prep: PreparedVerification,
    con: duckdb.DuckDBPyConnection,
    settled: pa.Table | None,
    mig: str | None,
    stop: threading.Event | None,
    max_retries: int,
    give_up_after: float | None,
    meanwhile: Callable[[pa.Table], None] | None = None,
) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """``(target keys, plan items, timings)``: the target read (mostly waiting on
    the API) in a thread while the journal's changed columns are read here, then ``meanwhile``
    is run here; the settled read when given."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-read") as pool:
        reading = None
        if settled is None:
            reading = pool.submit(
                read_target_keys,
                target,
                own_key=mig,
                stop=stop,
                max_retries=max_retries,
                give_up_after=give_up_after,
                detail=False,
                con=con,
            )
        try:
            items = _prepared_items(journal, prep)
            timings = {"journal": time.monotonic() - t0}
            if meanwhile is not None:
                meanwhile(items.select(ID_MAP.names))
        finally:
            keys = settled if reading is None else reading.result()
    return keys, items, timings


def _fill_ids(items: pa.Table, pairs: pa.Table | None) -> tuple[pa.Table, pa.Table]:
    """(id map with the ids verification found where the journal had none, those new pairs).
    Arrow kernels only: a hash lookup of every item in the pairs, no join, no sort."""
    id_map = items.select(ID_MAP.names)
    tid = id_map.column("target_id")
    if pairs is None or pairs.num_rows == 0 or tid.null_count == 0:
        return id_map, _PAIRS.empty_table()
    at = pc.index_in(id_map.column("source_id"), value_set=pairs.column("source_id"))
    found_tid = pc.take(pairs.column("target_id"), at)
    new = pc.and_(pc.is_null(tid), pc.is_valid(found_tid))
    filled = id_map.set_column(1, "target_id", pc.coalesce(tid, found_tid))
    found = pa.table(
        {"source_id": id_map.column("source_id").filter(new), "target_id": found_tid.filter(new)},
        schema=_PAIRS,
    )
    return filled, found


_PAIRS = pa.schema([("source_id", pa.string()), ("target_id", pa.string())])


def write_outputs(
    journal: Journal,
    work_dir: Path,
    verification: dict[str, Any] | None,
    *,
    id_map: pa.Table | None = None,
) -> dict[str, str]:
    """id map, dead letters and (when known) the verification report — each written atomically,
    each by its own function. ``id_map`` is the one verification made (`verify_journal`);
    without it the journal is read."""
    work_dir.mkdir(parents=True, exist_ok=True)
    out = {
        "id_map": write_id_map(journal, work_dir, id_map),
        "dead_letter": write_dead_letters(journal, work_dir),
    }
    if verification is not None:
        out["verification"] = write_report(work_dir, verification)
    return out


def write_id_map(journal: Journal, work_dir: Path, id_map: pa.Table | None = None) -> str:
    """``id_map.parquet`` from the Arrow table in hand (one Parquet write, no row loop)."""
    if id_map is None:
        id_map = plan_items(journal).select(ID_MAP.names)
    path = work_dir / "id_map.parquet"
    _atomic(path, lambda p: pq.write_table(id_map, p))
    return str(path)


def write_dead_letters(journal: Journal, work_dir: Path) -> str:
    """``dead_letter.jsonl``: one line per dead item (the only per-row step of the outputs, and
    only over the dead ones: each item is parsed and masked, which no column kernel can do)."""
    dead = journal.dead_letters()
    path = work_dir / "dead_letter.jsonl"
    text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in dead)
    _atomic(path, lambda p: Path(p).write_text(text))
    return str(path)


def write_report(work_dir: Path, verification: dict[str, Any]) -> str:
    """``verification.json`` (totals and per-group counts: small)."""
    path = work_dir / "verification.json"
    text = json.dumps(verification, indent=2, default=str)
    _atomic(path, lambda p: Path(p).write_text(text))
    return str(path)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)

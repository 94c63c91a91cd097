"""What the target already holds of a source: the question every run whose journal cannot prove
the state asks first (new journal, edited spec, edited or grown source, other cwd, ``--restart``).

One paged read of the target into an Arrow table of keys (`targetread.read_target_keys`), and
DuckDB joins them with the items in question. A source item is *held* when a target memory carries
its marker (same source key, same source id) or, ``by_id``, when a target memory has the source's
id (``import`` keeps ids). Several copies: the oldest (``created_at``, then id) is the one kept.
``changed`` says the landed copy's content fingerprint differs from the one planned now.

Library entry point for other verbs (e.g. a restore that must not re-send what is there):

    held = which_held(items, target_memories, source_key=key)

``items`` is a table (or list of dicts) with ``source_id`` and optionally ``content``; the answer
has one row per held item: ``source_id, target_id, copies, landed_content, changed, by``.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.targetread import read_target_keys
from longmem_etl.migrate.verify import target_keys

ITEMS = pa.schema([("source_id", pa.string()), ("content", pa.string())])

_HELD_SQL = """
WITH
marked AS (
    SELECT prov_source_id AS source_id, target_id, prov_content, created_at,
           row_number() OVER (PARTITION BY prov_source_id
                              ORDER BY created_at NULLS LAST, target_id) AS rank,
           count(*) OVER (PARTITION BY prov_source_id) AS copies
    FROM t WHERE prov_key = $key AND prov_source_id IS NOT NULL
),
by_marker AS (
    SELECT i.source_id, m.target_id, m.copies, m.prov_content AS landed_content,
           (i.content IS NOT NULL AND m.prov_content IS NOT NULL
            AND i.content <> m.prov_content) AS changed, 'marker' AS by
    FROM i JOIN marked m ON m.source_id = i.source_id AND m.rank = 1
),
by_id AS (
    SELECT i.source_id, min(t.target_id) AS target_id, count(*) AS copies,
           NULL::VARCHAR AS landed_content, false AS changed, 'id' AS by
    FROM i JOIN t ON t.target_id = i.source_id
    WHERE $by_id AND i.source_id NOT IN (SELECT source_id FROM by_marker)
    GROUP BY i.source_id
)
SELECT * FROM by_marker UNION ALL SELECT * FROM by_id
"""


def which_held(
    items: pa.Table | Iterable[dict[str, Any]],
    target: pa.Table | Iterable[dict[str, Any]],
    *,
    source_key: str,
    by_id: bool = False,
) -> pa.Table:
    """Which of ``items`` the target already holds (see the module docstring).

    ``target`` is either exported memories (dicts) or a `verify.target_keys` table."""
    if not isinstance(items, pa.Table):
        rows = list(items)
        items = pa.table(
            {
                "source_id": [str(r["source_id"]) for r in rows],
                "content": [r.get("content") for r in rows],
            },
            schema=ITEMS,
        )
    if not isinstance(target, pa.Table):
        target = target_keys(target)
    con = duckdb.connect()
    try:
        con.register("i", items)
        con.register("t", target)
        return con.sql(_HELD_SQL, params={"key": source_key, "by_id": by_id}).to_arrow_table()
    finally:
        con.close()


@dataclass
class Holdings:
    """What the first look at the target found for a fresh plan."""

    already_in_target: int = 0
    changed: int = 0
    with_copies: int = 0
    changed_items: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "already_in_target": self.already_in_target,
            "changed": self.changed,
            "with_extra_copies": self.with_copies,
        }


def learn_holdings(
    journal: Journal,
    target: Any,
    *,
    source_key: str,
    stop: threading.Event | None = None,
    max_retries: int = 30,
    give_up_after: float | None = None,
) -> Holdings:
    """Mark every planned item the target already holds as done (one durable transaction), and
    record those whose landed payload differs from the plan's. One read of the target."""
    rows = journal.planned_keys()
    if not rows:
        return Holdings()
    items = pa.table(
        {"source_id": [r[0] for r in rows], "content": [r[1] for r in rows]}, schema=ITEMS
    )
    keys = read_target_keys(
        target,
        fingerprints=False,
        stop=stop,
        max_retries=max_retries,
        give_up_after=give_up_after,
    )
    held = which_held(items, keys, source_key=source_key)
    del keys
    where = {r[0]: (r[2], r[3]) for r in rows}  # source_id -> (collection, chunk)
    per_chunk: dict[int, list[tuple[str, str | None]]] = defaultdict(list)
    changed = []
    report = Holdings()
    cols = held.to_pydict()
    for sid, tid, copies, landed, is_changed in zip(
        cols["source_id"],
        cols["target_id"],
        cols["copies"],
        cols["landed_content"],
        cols["changed"],
        strict=True,
    ):
        collection, chunk_no = where[sid]
        per_chunk[chunk_no].append((sid, tid))
        report.already_in_target += 1
        report.with_copies += int(copies > 1)
        if is_changed:
            changed.append((sid, tid, collection, landed, None))
    if changed:
        content = {r[0]: r[1] for r in rows}
        journal.record_changed([(s, t, c, o, content[s]) for s, t, c, o, _ in changed])
    journal.record_done_batch(sorted(per_chunk.items()))
    report.changed = len(changed)
    return report

"""Verification: does the target hold every source memory exactly once? (missing / extra / duplicated)

The target is exported once; both sides become Arrow tables of keys and DuckDB does the counting,
per collection and container tag:

- a target memory carrying a provenance marker is matched to the source memory with that id
  (``n`` copies: 1 is present, the other ``n-1`` are duplicated; a marker naming no source memory is
  extra);
- everything else is matched by content fingerprint as a multiset: per fingerprint, ``min(s, t)``
  present, ``s - t`` missing, ``t - s`` duplicated (or extra when the source has no such content).

``migration_id`` (a source key: see `migrate.source.source_key`) scopes the check to one source's
markers: only markers with that key are matched by id, and target memories that have nothing to do
with the source (content the source does not have) are reported as ``unrelated`` instead of
``extra`` — a migration into a non-empty account can still verify exactly. With ``foreign_copies``
(what `migrate` uses), memories carrying *another* key's marker or an older version's marker are
matched by content too: a second copy of a source memory made by any earlier run, under any spec or
journal, is counted as duplicated, so EXACT is never printed while the target holds duplicates of
the source. Without ``migration_id`` (plain ``verify``) every target memory counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from longmem_etl.migrate.keys import fingerprint, full_marker_of

SOURCE_KEYS = pa.schema(
    [
        ("source_id", pa.string()),
        ("collection", pa.string()),
        ("container_tag", pa.string()),
        ("fp", pa.string()),
    ]
)
TARGET_KEYS = pa.schema(
    [
        ("target_id", pa.string()),
        ("collection", pa.string()),
        ("container_tag", pa.string()),
        ("fp", pa.string()),
        ("prov_source_id", pa.string()),
        ("prov_key", pa.string()),
        ("prov_content", pa.string()),
        ("created_at", pa.string()),
    ]
)


def source_keys(memories: Iterable[dict[str, Any]]) -> pa.Table:
    """Keys of dump-form source memories (duplicate ids become ``id#2``… exactly as the planner does)."""
    seen: dict[str, int] = {}
    cols: dict[str, list] = {n: [] for n in SOURCE_KEYS.names}
    for m in memories:
        sid = "" if m.get("id") is None else str(m["id"])
        seen[sid] = seen.get(sid, 0) + 1
        if seen[sid] > 1:
            sid = f"{sid}#{seen[sid]}"
        coll = m.get("collection") or "default"
        tag = m.get("container_tag")
        cols["source_id"].append(sid)
        cols["collection"].append(str(coll))
        cols["container_tag"].append(None if tag is None else str(tag))
        cols["fp"].append(fingerprint(coll, tag, m.get("text")))
    return pa.table(cols, schema=SOURCE_KEYS)


def target_keys(
    memories: Iterable[dict[str, Any]], *, own_key: str | None = None, fingerprints: bool = True
) -> pa.Table:
    """Keys of exported target memories, provenance markers pulled out of metadata.

    The content fingerprint (NFC, whitespace, sha256: the per-row cost) is only computed where
    something reads it: for memories without a marker and, with ``own_key``, for those whose
    marker names another key (`compare` counts them by content); not at all with
    ``fingerprints=False`` (marker-only lookups). Pass the source key `compare` gets as
    ``migration_id`` as ``own_key``.

    This is the dict path; `targetread.read_target_keys` gives the same keys from a paged read."""
    cols: dict[str, list] = {n: [] for n in TARGET_KEYS.names}
    for m in memories:
        coll = m.get("collection") or "default"
        tag = m.get("container_tag")
        sid, key, content = full_marker_of(m.get("metadata"))
        created = m.get("created_at")
        cols["target_id"].append(None if m.get("id") is None else str(m["id"]))
        cols["collection"].append(str(coll))
        cols["container_tag"].append(None if tag is None else str(tag))
        needs_fp = fingerprints and (sid is None or (own_key is not None and key != own_key))
        cols["fp"].append(fingerprint(coll, tag, m.get("text")) if needs_fp else None)
        cols["prov_source_id"].append(sid)
        cols["prov_key"].append(key)
        cols["prov_content"].append(content)
        cols["created_at"].append(None if created is None else str(created))
    return pa.table(cols, schema=TARGET_KEYS)


@dataclass
class VerificationReport:
    exact: bool
    totals: dict[str, int]
    groups: list[dict[str, Any]] = field(default_factory=list)
    id_pairs: pa.Table | None = None  # source_id -> target_id found through markers
    id_map: pa.Table | None = None  # after a migration: the plan's items, target ids filled in
    ids_found: int = 0  # of those, the target ids verification found that the journal lacked
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step (benchmarks)
    target_read: str = "read"
    """``read``: the target was read for this check; ``settled``: the upload's last read of it
    was reused (`uploader.Uploader.settled_keys`: nothing was sent after it)."""

    def as_dict(self) -> dict[str, Any]:
        return {"exact": self.exact, "totals": self.totals, "groups": self.groups}

    to_json = as_dict  # the name every result object shares (``longmem_etl`` public API)

    def render(self) -> str:
        t = self.totals
        head = "EXACT" if self.exact else "MISMATCH"
        lines = [
            f"verification: {head} — source {t['source']}, target {t['target']}, present {t['present']}, "
            f"missing {t['missing']}, duplicated {t['duplicated']}, extra {t['extra']}"
            + (f", unrelated {t['unrelated']}" if t.get("unrelated") else "")
        ]
        bad = [g for g in self.groups if g["missing"] or g["duplicated"] or g["extra"]]
        for g in bad[:20]:
            lines.append(
                f"  {g['collection']} / {g['container_tag'] if g['container_tag'] is not None else '-'}: "
                f"source {g['source']}, missing {g['missing']}, duplicated {g['duplicated']}, extra {g['extra']}"
            )
        if len(bad) > 20:
            lines.append(f"  … and {len(bad) - 20} more groups")
        return "\n".join(lines)


_MARKERS_SQL = """
CREATE TEMP TABLE marker_n AS
SELECT prov_source_id AS sid, count(*) AS n, min(target_id) AS target_id
FROM t WHERE prov_source_id IS NOT NULL AND ($mig IS NULL OR prov_key = $mig) GROUP BY 1
"""
"""Per source id named by a counted marker: its copies and the first target id (the id pairs)."""

_SQL = """
WITH
s_m AS (SELECT s.collection, s.container_tag, s.fp, coalesce(m.n, 0) AS n
        FROM s LEFT JOIN marker_n m ON s.source_id = m.sid),
t_free AS (
    SELECT fp, collection, container_tag FROM t WHERE prov_source_id IS NULL
        OR ($foreign AND $mig IS NOT NULL AND prov_key IS DISTINCT FROM $mig)
),
s_fp AS (SELECT fp, any_value(collection) AS collection, any_value(container_tag) AS container_tag,
                count(*) AS sn FROM s_m WHERE n = 0 GROUP BY fp),
t_fp AS (SELECT fp, any_value(collection) AS collection, any_value(container_tag) AS container_tag,
                count(*) AS tn FROM t_free GROUP BY fp),
-- contents of the target's unmarked memories that some source memory has (probing the source
-- with the few target contents, not hashing every source fingerprint)
t_known_fp AS (SELECT DISTINCT fp FROM s WHERE fp IN (SELECT fp FROM t_fp)),
fp_rows AS (
    SELECT coalesce(a.collection, b.collection) AS collection,
           coalesce(a.container_tag, b.container_tag) AS container_tag,
           coalesce(a.sn, 0) AS sn, coalesce(b.tn, 0) AS tn,
           (b.fp IS NOT NULL AND b.fp IN (SELECT fp FROM t_known_fp)) AS t_known
    FROM s_fp a FULL OUTER JOIN t_fp b ON a.fp = b.fp
),
rows AS (
    -- source memories matched by marker
    SELECT collection, container_tag, 1 AS source, 1 AS present, 0 AS missing,
           n - 1 AS duplicated, 0 AS extra, 0 AS unrelated, n AS target
    FROM s_m WHERE n > 0
    UNION ALL
    -- content-matched multisets
    SELECT collection, container_tag, sn, least(sn, tn), greatest(sn - tn, 0),
           CASE WHEN sn > 0 OR t_known THEN greatest(tn - sn, 0) ELSE 0 END,
           CASE WHEN sn = 0 AND NOT t_known AND $mig IS NULL THEN tn ELSE 0 END,
           CASE WHEN sn = 0 AND NOT t_known AND $mig IS NOT NULL THEN tn ELSE 0 END,
           tn
    FROM fp_rows
    UNION ALL
    -- markers naming no source memory: extra; scoped, they are this source's items that a
    -- partial source (a dead-letter replay, a dump that lost memories) does not list: unrelated
    SELECT collection, container_tag, 0, 0, 0, 0,
           CASE WHEN $mig IS NULL THEN 1 ELSE 0 END, CASE WHEN $mig IS NULL THEN 0 ELSE 1 END, 1
    FROM t WHERE prov_source_id IN (SELECT sid FROM marker_n ANTI JOIN s ON sid = s.source_id)
        AND ($mig IS NULL OR prov_key = $mig)
    UNION ALL
    -- other sources' markers (scoped check without foreign_copies only)
    SELECT collection, container_tag, 0, 0, 0, 0, 0, 1, 1
    FROM t WHERE prov_source_id IS NOT NULL AND $mig IS NOT NULL AND NOT $foreign
        AND prov_key IS DISTINCT FROM $mig
)
SELECT collection, container_tag,
       sum(source)::BIGINT AS source, sum(target)::BIGINT AS target, sum(present)::BIGINT AS present,
       sum(missing)::BIGINT AS missing, sum(duplicated)::BIGINT AS duplicated,
       sum(extra)::BIGINT AS extra, sum(unrelated)::BIGINT AS unrelated
FROM rows GROUP BY ALL ORDER BY collection, container_tag NULLS FIRST
"""


_COMPARED = ["target_id", "collection", "container_tag", "fp", "prov_source_id", "prov_key"]
"""The target key columns the comparison reads (Arrow scans only these)."""


def compare(
    source: pa.Table,
    target: pa.Table,
    *,
    migration_id: str | None = None,
    foreign_copies: bool = False,
    con: duckdb.DuckDBPyConnection | None = None,
    pairs: bool = True,
) -> VerificationReport:
    """Compare key tables (see `source_keys`/`target_keys`). Exact = nothing missing, duplicated or
    extra. ``migration_id`` is the source key whose markers count; see the module docstring.
    ``con``: a DuckDB connection to use (and leave open) instead of a new one. ``pairs=False``:
    no ``id_pairs`` (a caller that knows every target id already need not materialise them)."""
    own = con is None
    if con is None:
        con = duckdb.connect()
    try:
        con.execute("SET threads = 1")  # each extra thread has its own hash tables and arenas
        con.register("s", source.select(SOURCE_KEYS.names))
        con.register("t", target.select(_COMPARED))
        con.execute(_MARKERS_SQL, {"mig": migration_id})
        cur = con.execute(_SQL, {"mig": migration_id, "foreign": foreign_copies})
        names = [d[0] for d in cur.description]
        groups = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        id_pairs = None
        if pairs:
            id_pairs = con.sql("SELECT sid AS source_id, target_id FROM marker_n").to_arrow_table()
    finally:
        if own:
            con.close()
        else:  # left as it was given
            con.execute("DROP TABLE IF EXISTS marker_n")
            con.unregister("s")
            con.unregister("t")
    keys = ("source", "target", "present", "missing", "duplicated", "extra", "unrelated")
    totals = {k: int(sum(g[k] for g in groups)) for k in keys}
    totals["source"] = source.num_rows
    totals["target"] = target.num_rows
    exact = totals["missing"] == 0 and totals["duplicated"] == 0 and totals["extra"] == 0
    return VerificationReport(exact=exact, totals=totals, groups=groups, id_pairs=id_pairs)

"""The analyst report's numbers: every figure is one DuckDB query over the warehouse views.

Each figure is a ``.sql`` file beside this module (except the personal-data one, which is built
from the ``redact`` step's own detector chain so the report finds exactly what ``redact`` would
replace). The queries read temp views scoped to one snapshot of one tenant
(``report_memories``, ``report_rejected``, ``report_diff``) that ``tenant_figures`` creates over the
warehouse's ``memories`` / ``rejected`` views and ``snapshots/diff.sql``; so any number in the report
can be reproduced with ``longmem-etl sql`` on the same root by adding
``WHERE tenant = T AND snapshot = S``.

No value of a memory is ever part of a figure: personal-data findings are counts per detector,
with an example whose letters and digits are all masked, and rejection reasons that quote an id or
value have it replaced by ``…``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

from longmem_etl.errors import BadInput
from longmem_etl.snapshots.manifest import read_manifest
from longmem_etl.sqlquote import sql_str
from longmem_etl.warehouse import SnapshotEntry

SQL_DIR = Path(__file__).resolve().parent
STALE_DAYS = 180
TOP_TAGS = 15
MASK_RE = r"[\pL\pN]"  # every letter and digit of an example is shown as •

FIGURES = (
    "overview",
    "created_weekly",
    "container_tags",
    "distributions",
    "duplicates",
    "personal_data",
    "rejected",
    "changes",
    "migrations",
)


@cache
def figure_sql(name: str) -> str:
    """The text of ``<name>.sql`` beside this module (comments included: DuckDB ignores them)."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


@dataclass
class Figure:
    """One figure's table: column names and rows (JSON-ready values)."""

    columns: list[str]
    rows: list[list[Any]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows}


@dataclass
class TenantReport:
    """Every figure of one tenant's snapshot."""

    tenant: str
    snapshot: str
    path: str
    as_of: str
    previous: str | None
    figures: dict[str, Figure] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "snapshot": self.snapshot,
            "path": self.path,
            "as_of": self.as_of,
            "previous_snapshot": self.previous,
            "figures": {k: v.to_json() for k, v in self.figures.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def run_figure(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> Figure:
    """Run one figure query; values made JSON-ready (timestamps as ISO UTC text)."""
    t0 = time.perf_counter()
    cur = con.execute(sql, params or {})
    cols = [d[0] for d in cur.description]
    fig = Figure(cols, [[_jsonable(v) for v in row] for row in cur.fetchall()])
    if os.environ.get("LONGMEM_ETL_REPORT_TIMINGS"):
        print(f"{time.perf_counter() - t0:6.2f}s {sql[:60]!r}", file=sys.stderr)
    return fig


def snapshot_time(snapshot: str) -> datetime:
    """A snapshot name is its commit second (``YYYYMMDDTHHMMSSZ``)."""
    return datetime.strptime(snapshot, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------------------
# personal data: the redact step's chain, counting only


def personal_data_sql() -> str:
    """Matches and rows per detector and field, from the ``redact`` step's own chain.

    ``compile_redact`` gives the layered expressions ``redact`` runs (combined pre-check, then each
    detector over the previous one's output, Luhn for cards) and one counter per field:detector;
    here the layers are computed and the counters summed, and the replaced text is never selected.
    The example is the first match in a row the detector changed, with every letter and digit
    masked (it shows the shape, e.g. ``•••@•••.••``, never the value).
    """
    from longmem_etl.transforms.redact import BUILTIN, compile_redact, detectors
    from longmem_etl.transforms.spec import Step, sql_str

    step = Step(
        index=1,
        kind="redact",
        name="report",
        options={"builtin": list(BUILTIN), "patterns": {}, "fields": ["text", "metadata"]},
    )
    (plan,) = compile_redact(step, datetime.now(timezone.utc))
    src = "(SELECT text, CAST(metadata AS VARCHAR) AS metadata FROM report_memories)"
    for layer in plan.layers:
        adds = ", ".join(f"{e} AS {k}" for k, e in layer.items())
        src = f"(SELECT *, {adds} FROM {src})"
    dets = detectors(step)
    cols, unions = [], []
    for key, expr in plan.counters.items():
        if ":" not in key:  # metadata_replaced: a consequence of replacing, not a finding
            continue
        fld, kind = key.split(":", 1)
        i = [d[0] for d in dets].index(kind)
        prev = fld if i == 0 else f"_rd_{fld}_{i - 1}"
        rx = dets[i][1]
        n = len(cols)
        cols.append(f"CAST({expr} AS BIGINT) AS c{n}")
        cols.append(
            f"CASE WHEN CAST({expr} AS BIGINT) > 0 THEN regexp_extract({prev}, {sql_str(rx)}) END AS e{n}"
        )
        unions.append(
            f"SELECT {sql_str(kind)} AS kind, {sql_str(fld)} AS field, "
            f"coalesce(sum(c{n}), 0) AS matches, count_if(c{n} > 0) AS memories, "
            f"regexp_replace(min(e{n}), {sql_str(MASK_RE)}, '•', 'g') AS example_masked FROM per_row"
        )
    return (
        f"WITH per_row AS (SELECT {', '.join(cols)} FROM {src} WHERE _rd_text_hit OR _rd_metadata_hit)\n"
        + "\nUNION ALL\n".join(unions)
        + "\nORDER BY matches DESC, kind, field"
    )


# ------------------------------------------------------------------------------------------------
# rejected rows of the snapshot and its parents, and migrations from this root


def lineage(path: Path, limit: int = 50) -> list[Path]:
    """The snapshot and its parents (``manifest.parent``), newest first, while they exist."""
    out, seen = [], set()
    cur: Path | None = path
    while cur is not None and len(out) < limit:
        cur = cur.resolve()
        if cur in seen or not (cur / "manifest.json").is_file():
            break
        seen.add(cur)
        out.append(cur)
        parent = read_manifest(cur).get("parent")
        cur = Path(parent) if isinstance(parent, str) and parent else None
    return out


def rejected_view_sql(chain: list[Path]) -> str:
    """A view over the ``rejected.parquet`` of each snapshot in ``chain`` whose manifest lists it."""
    parts = []
    for snap in chain:
        if "rejected.parquet" not in (read_manifest(snap).get("files") or {}):
            continue
        name = snap.name.split("=", 1)[-1]
        parts.append(
            f"SELECT {sql_str(name)} AS snapshot, stage, reason FROM "
            f"read_parquet({sql_str(str(snap / 'rejected.parquet'))})"
        )
    if not parts:
        return "SELECT CAST(NULL AS VARCHAR) AS snapshot, CAST(NULL AS VARCHAR) AS stage, CAST(NULL AS VARCHAR) AS reason LIMIT 0"
    return " UNION ALL ".join(parts)


# ------------------------------------------------------------------------------------------------
# one tenant


def pick(
    entries: list[SnapshotEntry], tenant: str, snapshot: str | None
) -> tuple[SnapshotEntry, SnapshotEntry | None]:
    """The tenant's snapshot to report (``snapshot`` or the newest) and the one before it."""
    mine = sorted((e for e in entries if e.tenant == tenant), key=lambda e: e.snapshot)
    if not mine:
        raise BadInput(f"--tenant {tenant}: no snapshot of that tenant under the root")
    if snapshot is None:
        chosen = mine[-1]
    else:
        found = [e for e in mine if e.snapshot == snapshot.removeprefix("snapshot=")]
        if not found:
            raise BadInput(f"--snapshot {snapshot}: tenant {tenant} has no such snapshot")
        chosen = found[0]
    i = mine.index(chosen)
    return chosen, (mine[i - 1] if i > 0 else None)


def tenant_figures(
    con: duckdb.DuckDBPyConnection,
    entry: SnapshotEntry,
    previous: SnapshotEntry | None,
    *,
    migrations: list[dict[str, Any]] | None = None,
    stale_days: int = STALE_DAYS,
    top: int = TOP_TAGS,
) -> TenantReport:
    """Every figure for one snapshot; ``con`` is a warehouse connection (``warehouse.connect``)
    with the dedup-key function registered (``transforms.sqlparts.register``)."""
    from longmem_etl.snapshots.diff import diff_sql
    from longmem_etl.transforms.sqlparts import dedup_key_sql

    as_of = snapshot_time(entry.snapshot)
    con.execute(
        "CREATE OR REPLACE TEMP VIEW report_memories AS SELECT * FROM memories "
        f"WHERE tenant = {sql_str(entry.tenant)} AND snapshot = {sql_str(entry.snapshot)}"
    )
    con.execute(
        "CREATE OR REPLACE TEMP VIEW report_rejected AS " + rejected_view_sql(lineage(entry.path))
    )
    rep = TenantReport(
        entry.tenant,
        entry.snapshot,
        str(entry.path),
        _jsonable(as_of),
        previous.snapshot if previous else None,
    )
    f = rep.figures
    f["overview"] = run_figure(
        con, figure_sql("overview"), {"as_of": as_of, "stale_days": stale_days}
    )
    f["created_weekly"] = run_figure(con, figure_sql("created_weekly"))
    f["container_tags"] = run_figure(con, figure_sql("container_tags"), {"top": top})
    f["distributions"] = run_figure(con, figure_sql("distributions"))
    f["duplicates"] = run_figure(
        con, figure_sql("duplicates").replace("{dedup_key}", dedup_key_sql("text"))
    )
    f["personal_data"] = run_figure(con, personal_data_sql())
    f["rejected"] = run_figure(con, figure_sql("rejected"))
    if previous is not None:
        con.execute("SET VARIABLE snap_a = ?", [str(previous.path)])
        con.execute("SET VARIABLE snap_b = ?", [str(entry.path)])
        con.execute("CREATE OR REPLACE TEMP VIEW report_diff AS " + diff_sql())
        f["changes"] = run_figure(con, figure_sql("changes"))
    else:
        f["changes"] = Figure(["collection", "added", "removed", "changed"], [])
    f["migrations"] = migrations_figure(migrations or [])
    return rep


MIGRATION_COLUMNS = [
    "migration_id",
    "exact",
    "source",
    "target",
    "present",
    "missing",
    "duplicated",
    "extra",
    "dead_lettered",
    "source_snapshot",
]


def migrations_figure(found: list[dict[str, Any]]) -> Figure:
    rows = []
    for m in found:
        v = m.get("verification") or {}
        t = v.get("totals") or {}
        rows.append(
            [
                m.get("migration_id"),
                v.get("exact"),
                t.get("source"),
                t.get("target"),
                t.get("present"),
                t.get("missing"),
                t.get("duplicated"),
                t.get("extra"),
                v.get("dead_lettered"),
                m.get("source_snapshot"),
            ]
        )
    return Figure(list(MIGRATION_COLUMNS), rows)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_jsonable, ensure_ascii=False)

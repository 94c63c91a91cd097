"""What changed between two snapshots: memories added, removed and changed (same id, any field
differs), computed by DuckDB straight over the two ``memories.parquet`` files.

The query is ``diff.sql`` beside this module, so users can run exactly what the toolkit runs::

    import duckdb
    con = duckdb.connect()
    con.execute("SET VARIABLE snap_a = ?", ["snapshots/tenant=acme/snapshot=20250101T000000Z"])
    con.execute("SET VARIABLE snap_b = ?", ["snapshots/tenant=acme/snapshot=20250102T000000Z"])
    con.sql(open("longmem_etl/snapshots/diff.sql").read()).show()

or, from Python, ``diff_relation(con, a, b)`` returns that relation to filter/aggregate further.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

from longmem_etl.errors import BadInput

SQL_PATH = Path(__file__).with_name("diff.sql")


@cache
def diff_sql() -> str:
    """The diff query (reads the ``snap_a`` / ``snap_b`` DuckDB variables)."""
    return SQL_PATH.read_text(encoding="utf-8").strip().rstrip(";")


def _check(path: str | os.PathLike) -> Path:
    from longmem_etl.snapshots.reader import open_snapshot

    snap = open_snapshot(path, verify=True)  # BadInput when not a (complete, intact) snapshot
    return snap.files_dir.resolve()  # an encrypted snapshot: its private decrypted copy


def diff_relation(
    con: duckdb.DuckDBPyConnection, snap_a: str | os.PathLike, snap_b: str | os.PathLike
) -> duckdb.DuckDBPyRelation:
    """The diff as a DuckDB relation on ``con`` (sets its ``snap_a``/``snap_b`` variables)."""
    con.execute("SET VARIABLE snap_a = ?", [str(snap_a)])
    con.execute("SET VARIABLE snap_b = ?", [str(snap_b)])
    return con.sql(diff_sql())


@dataclass
class SnapshotDiff:
    a: str
    b: str
    memories_a: int
    memories_b: int
    added: int
    removed: int
    changed: int
    unchanged: int
    changed_fields: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        """What ``longmem-etl diff`` prints: the counts, then one line per difference row."""
        lines = [
            f"{self.memories_a} -> {self.memories_b} memories: {self.added} added, "
            f"{self.removed} removed, {self.changed} changed, {self.unchanged} unchanged"
        ]
        if self.changed_fields:
            lines.append(
                "  changed fields: "
                + ", ".join(f"{k} x{v}" for k, v in self.changed_fields.items())
            )
        for r in self.rows:
            if r["change"] == "added":
                lines.append(f"  + {r['id']} [{r['collection']}] {_clip(r['text_b'])}")
            elif r["change"] == "removed":
                lines.append(f"  - {r['id']} [{r['collection']}] {_clip(r['text_a'])}")
            else:
                lines.append(f"  ~ {r['id']} [{r['collection']}] {', '.join(r['changed_fields'])}")
        total = self.added + self.removed + self.changed
        if len(self.rows) < total:
            lines.append(f"  ... {total - len(self.rows)} more (use --limit 0 or --json)")
        return "\n".join(lines)


def _clip(text: object, width: int = 60) -> str:
    s = "" if text is None else str(text).replace("\n", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


def diff_snapshots(
    snap_a: str | os.PathLike, snap_b: str | os.PathLike, *, limit: int | None = None
) -> SnapshotDiff:
    """Counts of added/removed/changed/unchanged memories, how often each field changed, and the
    difference rows (the first ``limit`` of them; all when None)."""
    a, b = _check(snap_a), _check(snap_b)
    shown = (str(Path(snap_a).resolve()), str(Path(snap_b).resolve()))
    con = duckdb.connect()
    try:
        rel = diff_relation(con, a, b)
        con.register("diff_rows", rel)
        counts = dict(
            con.execute("SELECT change, count(*) FROM diff_rows GROUP BY change").fetchall()
        )
        per_field = dict(
            con.execute(
                "SELECT f, count(*) FROM (SELECT unnest(changed_fields) AS f FROM diff_rows) "
                "GROUP BY f ORDER BY count(*) DESC, f"
            ).fetchall()
        )
        n_a = con.execute(
            "SELECT count(*) FROM read_parquet(getvariable('snap_a') || '/memories.parquet')"
        ).fetchone()[0]
        n_b = con.execute(
            "SELECT count(*) FROM read_parquet(getvariable('snap_b') || '/memories.parquet')"
        ).fetchone()[0]
        q = "SELECT * FROM diff_rows" + (f" LIMIT {int(limit)}" if limit is not None else "")
        cur = con.execute(q)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    except duckdb.Error as exc:
        raise BadInput(
            f"cannot diff {shown[0]} and {shown[1]}: {str(exc).splitlines()[0]}"
        ) from None
    finally:
        con.close()
    changed = counts.get("changed", 0)
    removed = counts.get("removed", 0)
    return SnapshotDiff(
        a=shown[0],
        b=shown[1],
        memories_a=n_a,
        memories_b=n_b,
        added=counts.get("added", 0),
        removed=removed,
        changed=changed,
        unchanged=n_a - removed - changed,
        changed_fields=per_field,
        rows=rows,
    )

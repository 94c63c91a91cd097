"""Apply a validated spec to memories inside DuckDB: each step reads the previous step's temp table and
writes the next one (set-based SQL, no Python loop over rows); removed rows go to a ``rejected`` temp
table with the step's name as stage. ``input == output + rejected`` is checked after every step.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from longmem_etl.errors import BadInput
from longmem_etl.transforms.plans import Custom, Reject, Rewrite
from longmem_etl.transforms.spec import Spec, sql_str
from longmem_etl.transforms.sqlparts import (
    MEM_COLS,
    ROW,
    SQL_TYPES,
    dump_json_sql,
    fidelity_sql,
    register,
)
from longmem_etl.transforms.steps import compile_step

_COLS = ", ".join(f'"{c}"' for c in MEM_COLS)


class InvariantBroken(AssertionError):
    """input != output + rejected: a bug in a step, never a user error."""


@dataclass
class StepReport:
    step: int
    name: str
    kind: str
    rows_in: int
    rows_out: int
    rejected: int
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "name": self.name,
            "kind": self.kind,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejected": self.rejected,
            "counts": self.counts,
        }


@dataclass
class Report:
    rows_in: int
    rows_out: int
    rejected: int
    now: datetime
    steps: list[StepReport]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejected": self.rejected,
            "now": self.now.isoformat(),
            "steps": [s.to_dict() for s in self.steps],
        }

    def table(self) -> str:
        """The per-step table for a terminal."""
        head = ("#", "step", "kind", "in", "out", "rejected", "details")
        rows = [
            (
                str(s.step),
                s.name,
                s.kind,
                f"{s.rows_in:,}",
                f"{s.rows_out:,}",
                f"{s.rejected:,}",
                ", ".join(f"{k}={v:,}" for k, v in s.counts.items() if v),
            )
            for s in self.steps
        ]
        rows.append(
            ("", "total", "", f"{self.rows_in:,}", f"{self.rows_out:,}", f"{self.rejected:,}", "")
        )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = {0, 3, 4, 5}

        def fmt(r: tuple[str, ...]) -> str:
            return "  ".join(
                (c.rjust(w) if i in right else c.ljust(w))
                for i, (c, w) in enumerate(zip(r, widths, strict=False))
            ).rstrip()

        return "\n".join([fmt(head), *(fmt(r) for r in rows)])


@dataclass
class Applied:
    """Result of `apply_spec`: lazy DuckDB relations over temp tables on the caller's connection."""

    output: duckdb.DuckDBPyRelation
    rejected: duckdb.DuckDBPyRelation
    report: Report
    output_table: str
    rejected_table: str

    def __iter__(self):  # (output, rejected, report) = apply_spec(...)
        return iter((self.output, self.rejected, self.report))


class _Names:
    def __init__(self) -> None:
        self.prefix = f"_lm_tx_{uuid.uuid4().hex[:8]}"
        self.n = itertools.count()

    def __call__(self, what: str) -> str:
        return f"{self.prefix}_{what}{next(self.n)}"


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def _load_input(
    con: duckdb.DuckDBPyConnection, source: Any, name: str, names: _Names, keep: list[str]
) -> str:
    """Copy the source into temp table ``name`` with typed memories columns plus ``_row``.

    Returns a SQL relation over the *original* input rows (typed, with ``_row``), used at the end to
    write ``rejected.raw`` as the row was before any step touched it. Helper objects it needs are
    appended to ``keep`` for cleanup.
    """
    casts = ", ".join(f'CAST("{c}" AS {SQL_TYPES[c]}) AS "{c}"' for c in MEM_COLS)
    if isinstance(source, (pa.Table, pa.RecordBatchReader)):
        table = source.read_all() if isinstance(source, pa.RecordBatchReader) else source
        missing = [c for c in MEM_COLS if c not in table.column_names]
        if missing:
            raise BadInput(f"transform input: missing memories columns {missing}")
        table = table.select(MEM_COLS).append_column(
            ROW, pa.array(range(table.num_rows), pa.int64())
        )
        view = names("arrow")
        con.register(view, table)
        keep.append(f"view:{view}")
        original = f"(SELECT {casts}, {ROW} FROM {view})"
    elif isinstance(source, Path) or (isinstance(source, str) and source.endswith(".parquet")):
        original = (
            f"(SELECT {casts}, file_row_number AS {ROW} "
            f"FROM read_parquet({sql_str(str(source))}, file_row_number = true))"
        )
    else:
        staging = names("src")
        if isinstance(source, str):
            con.execute(f"CREATE TEMP TABLE {staging} AS SELECT * FROM {source}")
        elif isinstance(source, duckdb.DuckDBPyRelation):
            source.create(staging)
        else:
            raise TypeError(f"apply_spec: unsupported input {type(source).__name__}")
        keep.append(f"table:{staging}")
        original = f"(SELECT {casts}, rowid AS {ROW} FROM {staging})"
    con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {original}")
    return original


def apply_spec(
    con: duckdb.DuckDBPyConnection, spec: Spec, source: Any, *, now: datetime | None = None
) -> Applied:
    """Run every step of ``spec`` over ``source`` on ``con``.

    ``source``: a pyarrow Table/RecordBatchReader with the memories columns, a Parquet path, a table or
    view name, or a DuckDB relation. ``rejected.row_index`` is the row's position in ``source``.
    ``now`` is the time `drop_expired` steps without their own ``now`` compare against (default: now).
    Returns `Applied` (unpacks as ``output, rejected, report``); the relations read temp tables that live
    as long as ``con``.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    register(con)
    names = _Names()
    base = names("in")
    helpers: list[str] = []
    original = _load_input(con, source, base, names, helpers)
    # Removed rows, never copied around: steps that only reject add (row, reason) here and leave the
    # data table alone; later steps see the data minus these rows (an anti join). Only rewriting
    # steps write a new data table.
    rem = names("removed")
    con.execute(
        f"CREATE TEMP TABLE {rem} (row_index BIGINT NOT NULL, stage VARCHAR NOT NULL, "
        f"reason VARCHAR NOT NULL, field VARCHAR, id VARCHAR, raw VARCHAR, step INTEGER NOT NULL)"
    )
    total_in = rows = _count(con, base)
    dirty = False  # some removed rows are still in `base`
    pristine = True  # `base` still holds the input values (so raw JSON can be taken from it)
    raw_sql = dump_json_sql()

    def live() -> str:
        if not dirty:
            return base
        return f"(SELECT b.* FROM {base} b ANTI JOIN {rem} r ON b.{ROW} = r.row_index)"

    reports: list[StepReport] = []
    for step in spec.steps:
        rows_in = rows
        rejected = 0
        counts: dict[str, int] = {}
        for plan in compile_step(step, now):
            if isinstance(plan, Reject):
                src = live()
                reason = plan.reason.replace("{input}", src)
                field_sql = sql_str(plan.field) if plan.field else "NULL"
                raw = raw_sql if pristine else "NULL"
                n = con.execute(
                    f"INSERT INTO {rem} SELECT {ROW}, {sql_str(step.name)}, _reason, {field_sql}, id, "
                    f"{raw}, {step.index} FROM (SELECT *, ({reason}) AS _reason FROM {src}) "
                    f"WHERE _reason IS NOT NULL"
                ).fetchall()[0][0]
                rejected += n
                dirty = dirty or n > 0
                continue
            nxt = names("s")
            if isinstance(plan, Rewrite):
                src = live()
                for layer in plan.layers:
                    adds = ", ".join(f"{e} AS {k}" for k, e in layer.items())
                    src = f"(SELECT *, {adds} FROM {src})"
                sel = []
                changed = {c: (e, f'"{c}"') for c, e in plan.exprs.items()}
                for c in MEM_COLS:
                    if c == "fidelity" and "fidelity" not in plan.exprs:
                        sel.append(f"{fidelity_sql(changed)} AS fidelity")
                    elif c in plan.exprs:
                        sel.append(f'{plan.exprs[c]} AS "{c}"')
                    else:
                        sel.append(f'"{c}"')
                counters = list(plan.counters.items())
                sel.append(ROW)
                sel += [f"CAST({e} AS BIGINT) AS _cnt{i}" for i, (_, e) in enumerate(counters)]
                con.execute(f"CREATE TEMP TABLE {nxt} AS SELECT {', '.join(sel)} FROM {src}")
                if counters:
                    sums = ", ".join(f"coalesce(sum(_cnt{i}), 0)" for i in range(len(counters)))
                    got = con.execute(f"SELECT {sums} FROM {nxt}").fetchall()[0]
                    for (k, _), v in zip(counters, got, strict=False):
                        counts[k] = counts.get(k, 0) + int(v)
            elif isinstance(plan, Custom):
                before = _count(con, rem)
                counts.update(plan.run(con, live(), nxt, rem, step.name, step.index))
                rejected += _count(con, rem) - before
            con.execute(f"DROP TABLE {base}")
            base, dirty, pristine = nxt, False, False
        rows = rows_in - rejected
        reports.append(
            StepReport(step.index, step.name, step.kind, rows_in, rows, rejected, counts)
        )
    # The accounting, checked for real: removed rows are distinct input rows, and what is left plus
    # what was removed is exactly the input.
    total_rej, distinct, out_of_range = con.execute(
        f"SELECT count(*), count(DISTINCT row_index), "
        f"count(*) FILTER (WHERE row_index < 0 OR row_index >= {total_in}) FROM {rem}"
    ).fetchall()[0]
    left = _count(con, live())
    if distinct != total_rej or out_of_range or total_in != left + total_rej or left != rows:
        raise InvariantBroken(
            f"{total_in} in != {left} out + {total_rej} rejected ({distinct} distinct rows, "
            f"{out_of_range} out of range; steps say {rows} out)"
        )
    report = Report(total_in, rows, total_rej, now, reports)
    # rejected.raw: the row exactly as it came in (dump form). Rows removed after a rewrite are looked
    # up in the input now, only those.
    missing = con.execute(f"SELECT count(*) FROM {rem} WHERE raw IS NULL").fetchall()[0][0]
    if missing:
        fix = names("raw")
        con.execute(
            f"CREATE TEMP TABLE {fix} AS SELECT {ROW}, {raw_sql} AS raw FROM {original} "
            f"WHERE {ROW} IN (SELECT row_index FROM {rem} WHERE raw IS NULL)"
        )
        con.execute(
            f"UPDATE {rem} SET raw = f.raw FROM {fix} f WHERE {rem}.raw IS NULL "
            f"AND f.{ROW} = {rem}.row_index"
        )
        con.execute(f"DROP TABLE {fix}")
        if con.execute(f"SELECT count(*) FROM {rem} WHERE raw IS NULL").fetchall()[0][0]:
            raise InvariantBroken("rejected rows lost joining back to the input")
    for h in helpers:
        kind, obj = h.split(":", 1)
        if kind == "view":
            con.unregister(obj)
        else:
            con.execute(f"DROP TABLE IF EXISTS {obj}")
    output = con.sql(f"SELECT {_COLS} FROM {live()} ORDER BY {ROW}")
    rejected_rel = con.sql(
        f"SELECT row_index, stage, reason, field, id, raw FROM {rem} ORDER BY step, row_index"
    )
    return Applied(output, rejected_rel, report, base, rem)

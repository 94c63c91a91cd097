"""Apply a validated spec to memories inside DuckDB, set-based (no Python loop over rows).

Every step compiles to SQL over the rows still alive after the previous steps. Removed rows are
recorded as (input position, step name, reason) and leave the data untouched; rewrites fuse into
nested SELECTs. ``rejected.raw`` is the removed row *as it came in* (dump-form JSON), and
``rejected.row_index`` its position in the input. ``input == output + rejected`` is checked for real
at the end (distinct positions, in range, counts add up); `InvariantBroken` means a bug.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

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
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
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
    """Result of `apply_spec`: lazy DuckDB relations over temp tables/views on the caller's
    connection (they live as long as it does). Rows come out in input order."""

    output: duckdb.DuckDBPyRelation
    rejected: duckdb.DuckDBPyRelation
    report: Report
    # With ``defer_tail``: the last rewrites were not materialised; their per-row counters ride
    # along as ``_cnt*`` columns and are summed into the report while `output_batches` streams.
    _stream: duckdb.DuckDBPyRelation | None = None
    _tail_counters: list[tuple[dict[str, int], str]] = field(default_factory=list)

    def __iter__(self):  # (output, rejected, report) = apply_spec(...)
        return iter((self.output, self.rejected, self.report))

    def output_batches(self, rows: int = 100_000):
        """Output record batches (memories columns only), completing deferred report counters."""
        if self._stream is None:
            yield from self.output.to_arrow_reader(rows)
            return
        cnt = [f"_cnt{i}" for i in range(len(self._tail_counters))]
        sums = [0] * len(cnt)
        for batch in self._stream.to_arrow_reader(rows):
            for i, c in enumerate(cnt):
                sums[i] += pc.sum(batch.column(c)).as_py() or 0
            yield batch.select(MEM_COLS)
        for (target, name), v in zip(self._tail_counters, sums, strict=True):
            target[name] = target.get(name, 0) + int(v)
        self._stream = None


class _Names:
    def __init__(self) -> None:
        self.prefix = f"_lm_tx_{uuid.uuid4().hex[:8]}"
        self.n = itertools.count()

    def __call__(self, what: str) -> str:
        return f"{self.prefix}_{what}{next(self.n)}"


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def _load_input(con: duckdb.DuckDBPyConnection, source: Any, names: _Names) -> str:
    """A SQL relation over the input rows: typed memories columns plus ``_row`` (0-based position),
    in input order. Parquet and Arrow inputs are read in place (no copy); a table name or relation
    is copied once into a temp table (its rowid gives the position)."""
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
        return f"(SELECT {casts}, {ROW} FROM {view})"
    if isinstance(source, Path) or (isinstance(source, str) and source.endswith(".parquet")):
        return (
            f"(SELECT {casts}, file_row_number AS {ROW} FROM read_parquet({sql_str(str(source))}, "
            f"file_row_number = true, hive_partitioning = false))"
        )
    staging = names("src")
    if isinstance(source, str):
        con.execute(f"CREATE TEMP TABLE {staging} AS SELECT * FROM {source}")
    elif isinstance(source, duckdb.DuckDBPyRelation):
        source.create(staging)
    else:
        raise TypeError(f"apply_spec: unsupported input {type(source).__name__}")
    return f"(SELECT {casts}, rowid AS {ROW} FROM {staging})"


# Step kinds that run the user's own SQL: a DuckDB error there is the spec's fault (exit 2).
USER_SQL_KINDS = frozenset({"filter", "sql"})


def _raise_step_error(spec: Spec, step: Any, exc: duckdb.Error) -> None:
    """An error while a step ran: Ctrl-C stays Ctrl-C; the sandbox refusing something, or the user's
    own SQL failing, is BadInput naming the step; anything else is a bug and propagates."""
    if isinstance(exc, duckdb.InterruptException):
        raise KeyboardInterrupt from None
    if isinstance(exc, duckdb.PermissionException) or step.kind in USER_SQL_KINDS:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        msg = lines[0] if lines else type(exc).__name__
        raise BadInput(f"{spec.path}: step {step.index} ({step.name}): {msg}") from None
    raise exc


def apply_spec(
    con: duckdb.DuckDBPyConnection,
    spec: Spec,
    source: Any,
    *,
    now: datetime | None = None,
    defer_tail: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
) -> Applied:
    """Run every step of ``spec`` over ``source`` on ``con``.

    ``source``: a pyarrow Table/RecordBatchReader with the memories columns, a Parquet path, a table or
    view name, or a DuckDB relation. ``rejected.row_index`` is the row's position in ``source``.
    ``now`` is the time `drop_expired` steps without their own ``now`` compare against (default: now).
    Returns `Applied` (unpacks as ``output, rejected, report``): lazy relations that read temp
    tables/views living as long as ``con``; output rows keep input order.

    ``defer_tail``: do not materialise trailing rewrite steps; read the output with
    `Applied.output_batches`, which streams it and completes those steps' counters (what
    `clean_snapshot` does, so the cleaned data is never held in memory whole). ``on_step`` is
    called with each step's report as it finishes (progress bars).

    How: the data is a chain of relations, each in input (``_row``) order. Steps that only remove
    rows write ``(row, reason)`` into a small ``removed`` table and leave the data alone; the rows
    still alive are the data positionally joined with an ``alive`` flag column (order-preserving, no
    hash join). Consecutive rewrites fuse into one nested SELECT, materialised only when a later
    step needs it.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    register(con)
    # Rows keep input order through every step only with this on (DuckDB's default; a sandbox
    # session has it on and locked, so it is set only when it is not already).
    if not con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]:
        con.execute("SET preserve_insertion_order = true")
    names = _Names()
    base = _load_input(con, source, names)  # SQL relation of the current data, in _row order
    original = base
    rem = names("removed")
    con.execute(
        f"CREATE TEMP TABLE {rem} (row_index BIGINT NOT NULL, stage VARCHAR NOT NULL, "
        f"reason VARCHAR NOT NULL, field VARCHAR, id VARCHAR, raw VARCHAR, step INTEGER NOT NULL)"
    )
    total_in = rows = _count(con, base)
    added = 0  # rows added by expanding steps (fit_text split); their _row is >= total_in
    origin: str | None = None  # (_row, origin) of added rows, when any step expands
    owned: list[str] = []  # temp tables holding data, dropped when superseded
    flags: str | None = None  # table of `alive` aligned with `base`, when rows were removed from it
    stale = False  # rows removed from `base` since `flags` was built
    pristine = True  # `base` still holds the input values (so raw JSON can be taken from it)
    raw_sql = dump_json_sql()

    def live() -> str:
        nonlocal flags, stale
        if stale:
            if flags:
                con.execute(f"DROP TABLE {flags}")
            flags = names("alive")
            con.execute(
                f"CREATE TEMP TABLE {flags} AS SELECT {ROW}, {ROW} NOT IN "
                f"(SELECT row_index FROM {rem}) AS alive FROM {base} ORDER BY {ROW}"
            )
            # The positional join below needs `base` in _row order; prove it rather than trust it.
            misaligned = con.execute(
                f"SELECT count(*) FROM {base} b POSITIONAL JOIN {flags} f "
                f"WHERE b.{ROW} IS DISTINCT FROM f.{ROW}"
            ).fetchall()[0][0]
            if misaligned:
                raise InvariantBroken(f"data is not in input order ({misaligned} rows off)")
            stale = False
        if flags is None:
            return base
        return f"(SELECT b.* FROM {base} b POSITIONAL JOIN {flags} f WHERE f.alive)"

    def new_base(table: str) -> None:
        nonlocal base, flags, stale
        for t in owned:
            con.execute(f"DROP TABLE IF EXISTS {t}")
        owned[:] = [table]
        if flags:
            con.execute(f"DROP TABLE {flags}")
        base, flags, stale = table, None, False

    reports: list[StepReport] = []
    # Consecutive rewrites are fused: `pending` is the nested SELECT not yet written;
    # `pending_counters` maps its counter columns to (report counts dict, name).
    pending: str | None = None
    pending_counters: list[tuple[dict[str, int], str]] = []

    def flush() -> None:
        nonlocal pending
        if pending is None:
            return
        nxt = names("s")
        con.execute(f"CREATE TEMP TABLE {nxt} AS SELECT * FROM {pending}")
        if pending_counters:
            sums = ", ".join(f"coalesce(sum(_cnt{i}), 0)" for i in range(len(pending_counters)))
            got = con.execute(f"SELECT {sums} FROM {nxt}").fetchall()[0]
            for (target, name), v in zip(pending_counters, got, strict=True):
                target[name] = target.get(name, 0) + int(v)
        pending = None
        pending_counters.clear()
        new_base(nxt)

    for step in spec.steps:
        t0 = time.perf_counter()
        rows_in = rows
        rejected = 0
        step_added = 0
        counts: dict[str, int] = {}
        try:
            for plan in compile_step(step, now):
                if isinstance(plan, Reject):
                    flush()
                    src = live()
                    if plan.query is not None:
                        query = plan.query.replace("{input}", src)
                        marked = f"(SELECT l.*, q._reason FROM {src} l JOIN ({query}) q ON l.{ROW} = q.{ROW})"
                    else:
                        reason = (plan.reason or "NULL").replace("{input}", src)
                        marked = f"(SELECT *, ({reason}) AS _reason FROM {src})"
                    field_sql = sql_str(plan.field) if plan.field else "NULL"
                    raw = raw_sql if pristine else "NULL"
                    n = con.execute(
                        f"INSERT INTO {rem} SELECT {ROW}, {sql_str(step.name)}, _reason, {field_sql}, id, "
                        f"{raw}, {step.index} FROM {marked} WHERE _reason IS NOT NULL"
                    ).fetchall()[0][0]
                    rejected += n
                    stale = stale or n > 0
                elif isinstance(plan, Rewrite):
                    src = pending if pending is not None else live()
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
                    sel.append(ROW)
                    sel += [f"_cnt{i}" for i in range(len(pending_counters))]
                    for name, e in plan.counters.items():
                        sel.append(f"CAST({e} AS BIGINT) AS _cnt{len(pending_counters)}")
                        pending_counters.append((counts, name))
                    pending = f"(SELECT {', '.join(sel)} FROM {src})"
                    pristine = False
                elif isinstance(plan, Custom):
                    flush()
                    nxt = names("s")
                    before = _count(con, rem)
                    extra: dict[str, Any] = {}
                    if plan.expands:
                        if origin is None:
                            origin = names("origin")
                            con.execute(f"CREATE TEMP TABLE {origin} ({ROW} BIGINT, origin BIGINT)")
                        extra = {"first_row": total_in + added, "origin": origin}
                    got = dict(plan.run(con, live(), nxt, rem, step.name, step.index, **extra))
                    grown = int(got.pop("rows_added", 0))
                    added += grown
                    step_added += grown
                    counts.update(got)
                    rejected += _count(con, rem) - before
                    new_base(nxt)
                    pristine = False
        except duckdb.Error as exc:
            _raise_step_error(spec, step, exc)
        rows = rows_in - rejected + step_added
        reports.append(
            StepReport(
                step.index,
                step.name,
                step.kind,
                rows_in,
                rows,
                rejected,
                counts,
                time.perf_counter() - t0,
            )
        )
        if on_step:
            on_step(reports[-1])
    stream = None
    tail: list[tuple[dict[str, int], str]] = []
    if defer_tail and pending is not None:
        stream = con.sql(f"SELECT * FROM {pending}")
        output_sql = f"(SELECT {_COLS}, {ROW} FROM {pending})"
        tail = list(pending_counters)
    else:
        t_flush = time.perf_counter()
        flush()
        if reports:  # the fused tail's work happened in this flush
            reports[-1].seconds += time.perf_counter() - t_flush
        output_sql = live()
    # The accounting, checked for real: removed rows are distinct input rows, and what is left plus
    # what was removed is exactly the input.
    total_rej, distinct, out_of_range = con.execute(
        f"SELECT count(*), count(DISTINCT row_index), "
        f"count(*) FILTER (WHERE row_index < 0 OR row_index >= {total_in + added}) FROM {rem}"
    ).fetchall()[0]
    left = _count(con, live())
    if (
        distinct != total_rej
        or out_of_range
        or total_in + added != left + total_rej
        or left != rows
    ):
        raise InvariantBroken(
            f"{total_in} in{f' + {added} added' if added else ''} != {left} out + {total_rej} rejected "
            f"({distinct} distinct rows, "
            f"{out_of_range} out of range; steps say {rows} out)"
        )
    report = Report(total_in, rows, total_rej, now, reports)
    # rejected.raw: the row exactly as it came in (dump form). Rows removed after a rewrite are
    # looked up in the input now, only those.
    missing = con.execute(f"SELECT count(*) FROM {rem} WHERE raw IS NULL").fetchall()[0][0]
    # An added row (fit_text part) has no input row of its own: its raw is its origin's.
    src_of = (
        f"(SELECT row_index AS r, coalesce(o.origin, row_index) AS src FROM {rem} "
        f"LEFT JOIN {origin} o ON o.{ROW} = {rem}.row_index WHERE {rem}.raw IS NULL)"
        if origin
        else f"(SELECT row_index AS r, row_index AS src FROM {rem} WHERE raw IS NULL)"
    )
    if missing:
        fix = names("raw")
        con.execute(
            f"CREATE TEMP TABLE {fix} AS SELECT w.r AS {ROW}, x.raw FROM {src_of} w JOIN "
            f"(SELECT {ROW}, {raw_sql} AS raw FROM {original} "
            f"WHERE {ROW} IN (SELECT src FROM {src_of})) x ON x.{ROW} = w.src"
        )
        con.execute(
            f"UPDATE {rem} SET raw = f.raw FROM {fix} f WHERE {rem}.raw IS NULL "
            f"AND f.{ROW} = {rem}.row_index"
        )
        con.execute(f"DROP TABLE {fix}")
        if con.execute(f"SELECT count(*) FROM {rem} WHERE raw IS NULL").fetchall()[0][0]:
            raise InvariantBroken("rejected rows lost joining back to the input")
    output = con.sql(f"SELECT {_COLS} FROM {output_sql}")
    index = "row_index"
    if origin:  # report an added row at the input row it came from
        index = (
            f"coalesce((SELECT o.origin FROM {origin} o WHERE o.{ROW} = {rem}.row_index), "
            "row_index) AS row_index"
        )
    rejected_rel = con.sql(
        f"SELECT {index}, stage, reason, field, id, raw FROM {rem} ORDER BY step, row_index"
    )
    return Applied(output, rejected_rel, report, stream, tail)

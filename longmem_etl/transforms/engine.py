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


def _raise_step_error(spec_path: Any, step: Any, exc: duckdb.Error) -> None:
    """An error while a step ran: Ctrl-C stays Ctrl-C; the sandbox refusing something, or the user's
    own SQL failing, is BadInput naming the step; anything else is a bug and propagates."""
    if isinstance(exc, duckdb.InterruptException):
        raise KeyboardInterrupt from None
    if isinstance(exc, duckdb.PermissionException) or step.kind in USER_SQL_KINDS:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        msg = lines[0] if lines else type(exc).__name__
        raise BadInput(f"{spec_path}: step {step.index} ({step.name}): {msg}") from None
    raise exc


class SpecRun:
    """One spec applied on one connection, a step at a time: the state the steps share.

    The data is a chain of relations, each in input (``_row``) order. Steps that only remove rows
    write ``(row, reason)`` into a small ``removed`` table (``self.removed``) and leave the data
    alone; the rows still alive are the data positionally joined with an ``alive`` flag column
    (order-preserving, no hash join). Consecutive rewrites fuse into one nested SELECT
    (``self.pending``), materialised only when a later step needs it.

    ``apply_spec`` is ``SpecRun(...)``, ``run_step`` for each step, then ``finish``; tests drive a
    run step by step and look at ``rows``, ``live()`` and ``removed`` in between.
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, source: Any, *, now: datetime, spec_path: Any = "spec"
    ) -> None:
        self.con = con
        self.now = now
        self.spec_path = spec_path
        register(con)
        # Rows keep input order through every step only with this on (DuckDB's default; a sandbox
        # session has it on and locked, so it is set only when it is not already).
        if not con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]:
            con.execute("SET preserve_insertion_order = true")
        self.names = _Names()
        self.base = _load_input(con, source, self.names)  # the current data, in _row order
        self.original = self.base
        self.removed = self.names("removed")
        con.execute(
            f"CREATE TEMP TABLE {self.removed} (row_index BIGINT NOT NULL, stage VARCHAR NOT NULL, "
            f"reason VARCHAR NOT NULL, field VARCHAR, id VARCHAR, raw VARCHAR, step INTEGER NOT NULL)"
        )
        self.total_in = self.rows = _count(con, self.base)
        self.added = 0  # rows added by expanding steps (fit_text split); their _row >= total_in
        self.origin: str | None = None  # (_row, origin) of added rows, when any step expands
        self.owned: list[str] = []  # temp tables holding data, dropped when superseded
        self.flags: str | None = None  # `alive` aligned with `base`, once rows were removed
        self.stale = False  # rows removed from `base` since `flags` was built
        self.pristine = True  # `base` still holds the input values (raw JSON can come from it)
        self.raw_sql = dump_json_sql()
        # the fused rewrites not yet written, and their counter columns -> (report counts, name)
        self.pending: str | None = None
        self.pending_counters: list[tuple[dict[str, int], str]] = []
        self.reports: list[StepReport] = []

    # -- the data as it stands ---------------------------------------------------------------------

    def live(self) -> str:
        """SQL for the rows still alive, in input order (flags rebuilt if rows were removed)."""
        con = self.con
        if self.stale:
            if self.flags:
                con.execute(f"DROP TABLE {self.flags}")
            self.flags = self.names("alive")
            con.execute(
                f"CREATE TEMP TABLE {self.flags} AS SELECT {ROW}, {ROW} NOT IN "
                f"(SELECT row_index FROM {self.removed}) AS alive FROM {self.base} ORDER BY {ROW}"
            )
            # The positional join below needs `base` in _row order; prove it rather than trust it.
            misaligned = con.execute(
                f"SELECT count(*) FROM {self.base} b POSITIONAL JOIN {self.flags} f "
                f"WHERE b.{ROW} IS DISTINCT FROM f.{ROW}"
            ).fetchall()[0][0]
            if misaligned:
                raise InvariantBroken(f"data is not in input order ({misaligned} rows off)")
            self.stale = False
        if self.flags is None:
            return self.base
        return f"(SELECT b.* FROM {self.base} b POSITIONAL JOIN {self.flags} f WHERE f.alive)"

    def _new_base(self, table: str) -> None:
        for t in self.owned:
            self.con.execute(f"DROP TABLE IF EXISTS {t}")
        self.owned[:] = [table]
        if self.flags:
            self.con.execute(f"DROP TABLE {self.flags}")
        self.base, self.flags, self.stale = table, None, False

    def flush(self) -> None:
        """Write the fused rewrites (if any) into a table and sum their counters."""
        if self.pending is None:
            return
        nxt = self.names("s")
        self.con.execute(f"CREATE TEMP TABLE {nxt} AS SELECT * FROM {self.pending}")
        if self.pending_counters:
            n = len(self.pending_counters)
            sums = ", ".join(f"coalesce(sum(_cnt{i}), 0)" for i in range(n))
            got = self.con.execute(f"SELECT {sums} FROM {nxt}").fetchall()[0]
            for (target, name), v in zip(self.pending_counters, got, strict=True):
                target[name] = target.get(name, 0) + int(v)
        self.pending = None
        self.pending_counters.clear()
        self._new_base(nxt)

    # -- the three kinds of plan -------------------------------------------------------------------

    def reject(self, plan: Reject, step: Any) -> int:
        """Record the rows ``plan`` removes (data untouched); returns how many."""
        self.flush()
        src = self.live()
        if plan.query is not None:
            query = plan.query.replace("{input}", src)
            marked = f"(SELECT l.*, q._reason FROM {src} l JOIN ({query}) q ON l.{ROW} = q.{ROW})"
        else:
            reason = (plan.reason or "NULL").replace("{input}", src)
            marked = f"(SELECT *, ({reason}) AS _reason FROM {src})"
        field_sql = sql_str(plan.field) if plan.field else "NULL"
        raw = self.raw_sql if self.pristine else "NULL"
        n = self.con.execute(
            f"INSERT INTO {self.removed} SELECT {ROW}, {sql_str(step.name)}, _reason, {field_sql}, "
            f"id, {raw}, {step.index} FROM {marked} WHERE _reason IS NOT NULL"
        ).fetchall()[0][0]
        self.stale = self.stale or n > 0
        return n

    def rewrite(self, plan: Rewrite, counts: dict[str, int]) -> None:
        """Fuse ``plan`` onto the pending SELECT (nothing runs yet); its counters land in ``counts``."""
        src = self.pending if self.pending is not None else self.live()
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
        sel += [f"_cnt{i}" for i in range(len(self.pending_counters))]
        for name, e in plan.counters.items():
            sel.append(f"CAST({e} AS BIGINT) AS _cnt{len(self.pending_counters)}")
            self.pending_counters.append((counts, name))
        self.pending = f"(SELECT {', '.join(sel)} FROM {src})"
        self.pristine = False

    def custom(self, plan: Custom, step: Any, counts: dict[str, int]) -> tuple[int, int]:
        """Run a step that writes its own output table; returns (rows rejected, rows added)."""
        self.flush()
        nxt = self.names("s")
        before = _count(self.con, self.removed)
        extra: dict[str, Any] = {}
        if plan.expands:
            if self.origin is None:
                self.origin = self.names("origin")
                self.con.execute(f"CREATE TEMP TABLE {self.origin} ({ROW} BIGINT, origin BIGINT)")
            extra = {"first_row": self.total_in + self.added, "origin": self.origin}
        got = dict(
            plan.run(self.con, self.live(), nxt, self.removed, step.name, step.index, **extra)
        )
        grown = int(got.pop("rows_added", 0))
        self.added += grown
        counts.update(got)
        rejected = _count(self.con, self.removed) - before
        self._new_base(nxt)
        self.pristine = False
        return rejected, grown

    # -- steps and the end -------------------------------------------------------------------------

    def run_step(self, step: Any) -> StepReport:
        """Compile and apply one spec step; returns (and keeps) its report."""
        t0 = time.perf_counter()
        rows_in = self.rows
        rejected = step_added = 0
        counts: dict[str, int] = {}
        try:
            for plan in compile_step(step, self.now):
                if isinstance(plan, Reject):
                    rejected += self.reject(plan, step)
                elif isinstance(plan, Rewrite):
                    self.rewrite(plan, counts)
                elif isinstance(plan, Custom):
                    r, a = self.custom(plan, step, counts)
                    rejected += r
                    step_added += a
        except duckdb.Error as exc:
            _raise_step_error(self.spec_path, step, exc)
        self.rows = rows_in - rejected + step_added
        report = StepReport(
            step.index,
            step.name,
            step.kind,
            rows_in,
            self.rows,
            rejected,
            counts,
            time.perf_counter() - t0,
        )
        self.reports.append(report)
        return report

    def check_accounting(self) -> int:
        """Removed rows are distinct input rows, and what is left plus what was removed is exactly
        the input (plus added rows); InvariantBroken otherwise. Returns the rejected count."""
        con, rem, total = self.con, self.removed, self.total_in + self.added
        total_rej, distinct, out_of_range = con.execute(
            f"SELECT count(*), count(DISTINCT row_index), "
            f"count(*) FILTER (WHERE row_index < 0 OR row_index >= {total}) FROM {rem}"
        ).fetchall()[0]
        left = _count(con, self.live())
        if distinct != total_rej or out_of_range or total != left + total_rej or left != self.rows:
            added = f" + {self.added} added" if self.added else ""
            raise InvariantBroken(
                f"{self.total_in} in{added} != {left} out + {total_rej} rejected "
                f"({distinct} distinct rows, "
                f"{out_of_range} out of range; steps say {self.rows} out)"
            )
        return total_rej

    def _fill_raw(self) -> None:
        """rejected.raw: the row exactly as it came in (dump form). Rows removed after a rewrite
        are looked up in the input now, only those; an added row (fit_text part) has no input row
        of its own: its raw is its origin's."""
        con, rem, origin = self.con, self.removed, self.origin
        missing = con.execute(f"SELECT count(*) FROM {rem} WHERE raw IS NULL").fetchall()[0][0]
        if not missing:
            return
        src_of = (
            f"(SELECT row_index AS r, coalesce(o.origin, row_index) AS src FROM {rem} "
            f"LEFT JOIN {origin} o ON o.{ROW} = {rem}.row_index WHERE {rem}.raw IS NULL)"
            if origin
            else f"(SELECT row_index AS r, row_index AS src FROM {rem} WHERE raw IS NULL)"
        )
        fix = self.names("raw")
        con.execute(
            f"CREATE TEMP TABLE {fix} AS SELECT w.r AS {ROW}, x.raw FROM {src_of} w JOIN "
            f"(SELECT {ROW}, {self.raw_sql} AS raw FROM {self.original} "
            f"WHERE {ROW} IN (SELECT src FROM {src_of})) x ON x.{ROW} = w.src"
        )
        con.execute(
            f"UPDATE {rem} SET raw = f.raw FROM {fix} f WHERE {rem}.raw IS NULL "
            f"AND f.{ROW} = {rem}.row_index"
        )
        con.execute(f"DROP TABLE {fix}")
        if con.execute(f"SELECT count(*) FROM {rem} WHERE raw IS NULL").fetchall()[0][0]:
            raise InvariantBroken("rejected rows lost joining back to the input")

    def finish(self, *, defer_tail: bool = False) -> Applied:
        """Write (or, with ``defer_tail``, leave streaming) the last rewrites, check the
        accounting, fill ``raw`` and return the output and rejected relations."""
        con, rem = self.con, self.removed
        stream = None
        tail: list[tuple[dict[str, int], str]] = []
        if defer_tail and self.pending is not None:
            stream = con.sql(f"SELECT * FROM {self.pending}")
            output_sql = f"(SELECT {_COLS}, {ROW} FROM {self.pending})"
            tail = list(self.pending_counters)
        else:
            t_flush = time.perf_counter()
            self.flush()
            if self.reports:  # the fused tail's work happened in this flush
                self.reports[-1].seconds += time.perf_counter() - t_flush
            output_sql = self.live()
        total_rej = self.check_accounting()
        report = Report(self.total_in, self.rows, total_rej, self.now, self.reports)
        self._fill_raw()
        output = con.sql(f"SELECT {_COLS} FROM {output_sql}")
        index = "row_index"
        if self.origin:  # report an added row at the input row it came from
            index = (
                f"coalesce((SELECT o.origin FROM {self.origin} o WHERE o.{ROW} = {rem}.row_index), "
                "row_index) AS row_index"
            )
        rejected_rel = con.sql(
            f"SELECT {index}, stage, reason, field, id, raw FROM {rem} ORDER BY step, row_index"
        )
        return Applied(output, rejected_rel, report, stream, tail)


def apply_spec(
    con: duckdb.DuckDBPyConnection,
    spec: Spec,
    source: Any,
    *,
    now: datetime | None = None,
    defer_tail: bool = False,
    on_step: Callable[[StepReport], None] | None = None,
) -> Applied:
    """Run every step of ``spec`` over ``source`` on ``con`` (a ``SpecRun``, step by step).

    ``source``: a pyarrow Table/RecordBatchReader with the memories columns, a Parquet path, a table or
    view name, or a DuckDB relation. ``rejected.row_index`` is the row's position in ``source``.
    ``now`` is the time `drop_expired` steps without their own ``now`` compare against (default: now).
    Returns `Applied` (unpacks as ``output, rejected, report``): lazy relations that read temp
    tables/views living as long as ``con``; output rows keep input order.

    ``defer_tail``: do not materialise trailing rewrite steps; read the output with
    `Applied.output_batches`, which streams it and completes those steps' counters (what
    `clean_snapshot` does, so the cleaned data is never held in memory whole). ``on_step`` is
    called with each step's report as it finishes (progress bars).
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    run = SpecRun(con, source, now=now, spec_path=spec.path)
    for step in spec.steps:
        report = run.run_step(step)
        if on_step:
            on_step(report)
    return run.finish(defer_tail=defer_tail)

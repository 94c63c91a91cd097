"""What a step compiles to. The runner (`run.py`) turns these into DuckDB statements.

- `Reject`: rows whose ``reason`` SQL expression is not NULL leave the data and go to ``rejected``.
- `Rewrite`: column expressions replacing columns (other columns pass through), optional helper layers
  computed first (for multi-stage rewrites such as redact), and per-row counters summed for the report.

Expressions may use ``{input}`` for the step's input table (e.g. in a subquery).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reject:
    """``reason``: a per-row SQL expression (NULL = keep). Or ``query``: a full query over
    ``{input}`` returning ``(_row, _reason)`` for just the removed rows (for set-wise steps)."""

    reason: str | None = None
    field: str | None = None
    query: str | None = None


@dataclass
class Rewrite:
    exprs: dict[str, str]
    layers: list[dict[str, str]] = field(default_factory=list)
    counters: dict[str, str] = field(default_factory=dict)


@dataclass
class Custom:
    """A step that needs its own statements: ``run(con, input_relation, output_table, removed_table,
    stage, step_no) -> dict`` (extra report entries). It creates ``output_table`` (memories columns +
    ``_row``) and inserts ``(row_index, stage, reason, field, id, step)`` into ``removed_table`` for
    the rows it drops (``raw`` is filled in by the runner).

    ``expands``: the step may also *add* rows (``fit_text`` splitting a text). ``run`` then gets
    ``first_row=`` (the first free ``_row``, past the input's end) and ``origin=`` (a table
    ``(_row, origin)`` where it records, for each added row, the input row it came from) and
    returns ``rows_added`` among its counts."""

    run: Callable[..., dict[str, Any]]
    expands: bool = False


Plan = Reject | Rewrite | Custom

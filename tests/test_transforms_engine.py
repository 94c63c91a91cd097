"""The engine's ``SpecRun`` driven one step at a time: what each kind of plan does to the shared
state (rows alive, the removed table, fused rewrites, raw JSON of rejects) before the end."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from longmem_etl.errors import BadInput
from longmem_etl.schema import MEMORIES_SCHEMA
from longmem_etl.transforms import parse_spec
from longmem_etl.transforms.engine import SpecRun

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
SPEC = """
[[steps]]
kind='drop_archived'
[[steps]]
kind='set_defaults'
category='other'
[[steps]]
kind='filter'
where="category = 'other'"
"""


def mem(id: str, **kw: Any) -> dict[str, Any]:
    row = dict.fromkeys(MEMORIES_SCHEMA.names)
    row.update(id=id, collection="c", text="t", **kw)
    return row


def _rows(run: SpecRun) -> list[tuple[str, str | None]]:
    return run.con.execute(f"SELECT id, category FROM {run.live()} ORDER BY _row").fetchall()


def _removed(run: SpecRun) -> list[tuple[int, str, bool]]:
    sql = f"SELECT row_index, stage, raw IS NOT NULL FROM {run.removed} ORDER BY row_index"
    return run.con.execute(sql).fetchall()


@pytest.fixture
def run() -> SpecRun:
    rows = [mem("a", archived=True), mem("b"), mem("c", category="fact"), mem("d")]
    table = pa.Table.from_pylist(rows, schema=MEMORIES_SCHEMA)
    return SpecRun(duckdb.connect(), table, now=NOW)


def test_each_step_can_be_run_and_looked_at_on_its_own(run: SpecRun) -> None:
    drop, defaults, keep = parse_spec(SPEC).steps

    first = run.run_step(drop)  # a Reject plan: recorded, data untouched, raw taken from input
    assert (first.rows_in, first.rows_out, first.rejected) == (4, 3, 1)
    assert _rows(run) == [("b", None), ("c", "fact"), ("d", None)]
    assert _removed(run) == [(0, "drop_archived", True)]

    second = run.run_step(defaults)  # a Rewrite: fused, not written until a later step needs it
    assert run.pending is not None and second.rows_out == 3
    assert _rows(run) == [("b", None), ("c", "fact"), ("d", None)]
    run.flush()
    assert run.pending is None
    assert _rows(run) == [("b", "other"), ("c", "fact"), ("d", "other")]

    third = run.run_step(keep)  # rows removed after a rewrite: raw is filled in at the end
    assert (third.rows_out, third.rejected) == (2, 1)
    assert _removed(run) == [(0, "drop_archived", True), (2, "filter", False)]

    output, rejected, report = run.finish()
    assert [r["id"] for r in output.to_arrow_table().to_pylist()] == ["b", "d"]
    raws = {r["row_index"]: json.loads(r["raw"]) for r in rejected.to_arrow_table().to_pylist()}
    assert raws[2]["category"] == "fact" and raws[0]["archived"] is True
    assert (report.rows_in, report.rows_out, report.rejected) == (4, 2, 2)


def test_finish_catches_a_run_whose_counts_do_not_add_up(run: SpecRun) -> None:
    run.run_step(parse_spec(SPEC).steps[0])
    run.rows += 1  # a step that miscounted
    with pytest.raises(AssertionError, match="4 in != 3 out"):
        run.finish()


def test_a_failing_user_step_names_the_step(run: SpecRun) -> None:
    step = parse_spec("[[steps]]\nkind='filter'\nwhere='CAST(text AS INTEGER) > 1'").steps[0]
    with pytest.raises(BadInput, match=r"step 1 \(filter\)"):
        run.run_step(step)

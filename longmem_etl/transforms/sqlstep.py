"""The raw `sql` step: ``SELECT ... FROM input`` for whatever no step covers.

The query sees ``input`` (the memories columns only) and must return exactly those columns (any order;
values are cast to the memories types). Rows are matched back to the input by ``id``: ids that
disappear are rejected ("sql step removed row"); an id the input did not have, or an id returned
twice, is an error, because it would make ``input == output + rejected`` meaningless.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from longmem_etl.errors import BadInput
from longmem_etl.transforms.plans import Custom, Plan
from longmem_etl.transforms.spec import Step, sql_str
from longmem_etl.transforms.sqlparts import MEM_COLS, SQL_TYPES, fidelity_sql


def compile_sql(step: Step, now: datetime) -> list[Plan]:
    query = step.options["query"]
    where = f"step {step.index} ({step.name})"

    def run(
        con: duckdb.DuckDBPyConnection, inp: str, out: str, rej: str, stage: str, step_no: int
    ) -> dict[str, Any]:
        dup_in = con.execute(
            f"SELECT id FROM {inp} GROUP BY id HAVING count(*) > 1 LIMIT 1"
        ).fetchall()[:1]
        if dup_in:
            raise BadInput(
                f"{where}: its input has duplicate id {dup_in[0][0]!r}; sql steps need unique ids"
            )
        cols = ", ".join(f'"{c}"' for c in MEM_COLS)
        res = f"{out}_q"
        try:
            con.execute(
                f"CREATE TEMP TABLE {res} AS WITH input AS (SELECT {cols} FROM {inp}) "
                f"SELECT * FROM ({query}\n)"
            )
            typed = {c: f'CAST(q."{c}" AS {SQL_TYPES[c]})' for c in MEM_COLS}
            # A query that leaves fidelity alone but changes a typed field: the new value wins.
            fid = fidelity_sql(
                {c: (typed[c], f'i."{c}"') for c in MEM_COLS if c not in ("extra", "fidelity")},
                fid=typed["fidelity"],
            )
            typed["fidelity"] = (
                f"CASE WHEN q.fidelity IS NOT DISTINCT FROM i.fidelity THEN {fid} ELSE {typed['fidelity']} END"
            )
            casts = ", ".join(f'{typed[c]} AS "{c}"' for c in MEM_COLS)
            dup = con.execute(
                f"SELECT id FROM {res} GROUP BY id HAVING count(*) > 1 LIMIT 1"
            ).fetchall()[:1]
            if dup:
                raise BadInput(f"{where}: query returns id {dup[0][0]!r} more than once")
            new = con.execute(
                f"SELECT q.id FROM {res} q ANTI JOIN {inp} i ON q.id = i.id LIMIT 1"
            ).fetchall()[:1]
            if new:
                raise BadInput(f"{where}: query returns id {new[0][0]!r} that is not in its input")
            con.execute(
                f"CREATE TEMP TABLE {out} AS SELECT {casts}, i._row FROM {res} q "
                f"JOIN {inp} i ON q.id = i.id ORDER BY i._row"
            )
            con.execute(
                f"INSERT INTO {rej} (row_index, stage, reason, field, id, step) "
                f"SELECT _row, {sql_str(stage)}, 'sql step removed row', NULL, id, {step_no} "
                f"FROM {inp} i WHERE NOT EXISTS (SELECT 1 FROM {res} q WHERE q.id = i.id) ORDER BY _row"
            )
        except duckdb.InterruptException:
            raise KeyboardInterrupt from None
        except duckdb.Error as exc:
            raise BadInput(f"{where}: query failed: {' '.join(str(exc).split())[:300]}") from None
        finally:
            con.execute(f"DROP TABLE IF EXISTS {res}")
        return {}

    return [Custom(run)]

"""The ``fit_text`` step: make texts fit a target's length limit, declaratively.

A target may refuse long texts (the embedded store: 100,000 characters unless its URI says
otherwise) while a seeded or exported tenant holds longer ones. ``fit_text`` fixes them before the
upload instead of leaving them to dead letters:

- ``mode = "split"``: a text over ``max_chars`` becomes linked parts, each at most ``max_chars``
  characters, cut after a whitespace run in the second half of the window when there is one (else
  exactly at the limit). The parts joined give the original text back exactly. Part 1 keeps the
  row's id; part k > 1 gets ``<id>~part<k>``. Every part's metadata gets
  ``"_fit_text": {"of": <id>, "part": k, "parts": n, "original_chars": L}``; every other field is
  copied. Extra parts come after the input's rows (their ``_row`` is past the input's end); a part
  rejected by a later step is reported at its original row's ``row_index``.
- ``mode = "truncate"``: the text keeps its first ``max_chars`` characters; metadata gets
  ``"_fit_text": {"truncated": true, "original_chars": L}``.

Metadata that is not a JSON object is kept whole under ``_original_metadata`` (as the migration's
provenance marker does). Texts at or under the limit, and NULL texts, are untouched, byte for byte.
Only the long rows leave DuckDB (a few, by nature); the rest is one ``INSERT ... SELECT``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from longmem_etl import jsonio
from longmem_etl.errors import BadInput
from longmem_etl.transforms.plans import Custom, Plan
from longmem_etl.transforms.spec import Step
from longmem_etl.transforms.sqlparts import MEM_COLS

FIT_KEY = "_fit_text"
ORIGINAL_METADATA_KEY = "_original_metadata"
PART_SUFFIX = "~part"
_WS_RUN = re.compile(r"\s+")


def split_text(text: str, max_chars: int) -> list[str]:
    """Parts of at most ``max_chars`` characters whose concatenation is ``text``; each cut falls
    just after a whitespace run in the window's second half when there is one."""
    parts: list[str] = []
    i, n = 0, len(text)
    while n - i > max_chars:
        end = i + max_chars
        cut = end
        last = None
        for m in _WS_RUN.finditer(text, i + max_chars // 2, end):
            last = m
        if last is not None and last.end() > i:
            cut = last.end()
        parts.append(text[i:cut])
        i = cut
    parts.append(text[i:])
    return parts


def _with_fit(metadata: str | None, note: dict[str, Any]) -> str:
    """Metadata JSON text with ``_fit_text`` set (numbers kept exact)."""
    value = None if metadata is None else jsonio.loads(metadata)
    if value is None:
        out: dict[str, Any] = {}
    elif isinstance(value, dict):
        out = dict(value)
    else:
        out = {ORIGINAL_METADATA_KEY: value}
    out[FIT_KEY] = note
    return jsonio.dumps_str(out)


def _fit_rows(
    rows: list[dict[str, Any]], max_chars: int, mode: str, first_row: int
) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The long rows, fitted; plus ``(new _row, parent _row)`` for every added part."""
    out: list[dict[str, Any]] = []
    added: list[tuple[int, int]] = []
    next_row = first_row
    for row in rows:
        text: str = row["text"]
        length = len(text)
        if mode == "truncate":
            note = {"truncated": True, "original_chars": length}
            out.append(
                {**row, "text": text[:max_chars], "metadata": _with_fit(row["metadata"], note)}
            )
            continue
        parts = split_text(text, max_chars)
        for k, part in enumerate(parts, start=1):
            note = {"of": row["id"], "part": k, "parts": len(parts), "original_chars": length}
            new = {**row, "text": part, "metadata": _with_fit(row["metadata"], note)}
            if k > 1:
                new["id"] = f"{row['id']}{PART_SUFFIX}{k}"
                new["_row"] = next_row
                added.append((next_row, row["_row"]))
                next_row += 1
            out.append(new)
    return out, added


def compile_fit_text(step: Step, now: datetime) -> list[Plan]:
    max_chars = int(step.options["max_chars"])
    mode = step.options["mode"]
    where = f"step {step.index} ({step.name})"

    def run(
        con: duckdb.DuckDBPyConnection,
        inp: str,
        out: str,
        rej: str,
        stage: str,
        step_no: int,
        *,
        first_row: int,
        origin: str,
    ) -> dict[str, Any]:
        cols = ", ".join(f'"{c}"' for c in MEM_COLS)
        too_long = f"length(text) > {max_chars}"
        long = con.sql(
            f"SELECT {cols}, _row FROM {inp} WHERE {too_long} ORDER BY _row"
        ).to_arrow_table()
        keep = f"SELECT {cols}, _row FROM {inp} WHERE text IS NULL OR NOT ({too_long})"
        if long.num_rows == 0:
            con.execute(f"CREATE TEMP TABLE {out} AS {keep} ORDER BY _row")
            return {"fitted": 0, "rows_added": 0}
        fitted, added = _fit_rows(long.to_pylist(), max_chars, mode, first_row)
        view = f"{out}_fit"
        con.register(view, pa.Table.from_pylist(fitted, schema=long.schema))
        try:
            if added:
                clash = con.execute(
                    f"SELECT f.id FROM {view} f SEMI JOIN {inp} i ON f.id = i.id "
                    f"WHERE f._row >= {first_row} LIMIT 1"
                ).fetchall()
                if clash:
                    raise BadInput(
                        f"{where}: part id {clash[0][0]!r} is already an id in its input; "
                        'rename that memory or use mode = "truncate"'
                    )
            # the fitted fields' raw/absent fidelity entries no longer describe them
            forget = "['id', 'text', 'metadata']"
            fid = f"CASE WHEN fidelity IS NULL THEN NULL ELSE lm_fidelity_forget(fidelity, {forget}) END"
            sel = ", ".join(
                fid + ' AS "fidelity"' if c == "fidelity" else f'"{c}"' for c in MEM_COLS
            )
            con.execute(
                f"CREATE TEMP TABLE {out} AS SELECT * FROM ({keep} UNION ALL "
                f"SELECT {sel}, _row FROM {view}) ORDER BY _row"
            )
            if added:
                # parts of parts (two fit_text steps) point at the row the spec's input had
                con.executemany(
                    f"INSERT INTO {origin} SELECT ?, coalesce("
                    f"(SELECT origin FROM {origin} WHERE _row = ?), ?)",
                    [(new, parent, parent) for new, parent in added],
                )
        finally:
            con.unregister(view)
        return {"fitted": long.num_rows, "parts_added": len(added), "rows_added": len(added)}

    return [Custom(run, expands=True)]

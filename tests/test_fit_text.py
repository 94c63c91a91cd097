"""The fit_text step: split (linked parts, lossless) and truncate (original length kept), with
before/after rows, fidelity, later steps rejecting parts, and spec validation + schema."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import jsonschema
import pyarrow as pa
import pytest

from longmem_etl.errors import BadInput
from longmem_etl.schema import MEMORIES_SCHEMA
from longmem_etl.transforms import apply_spec, parse_spec
from longmem_etl.transforms.fittext import split_text
from longmem_etl.transforms.spec import json_schema

SPLIT = "[[steps]]\nkind = 'fit_text'\nmax_chars = 10\nmode = 'split'\n"
TRUNC = "[[steps]]\nkind = 'fit_text'\nmax_chars = 10\nmode = 'truncate'\n"


def mem(id: str, text: str | None, **kw: Any) -> dict[str, Any]:
    row = dict.fromkeys(MEMORIES_SCHEMA.names)
    row.update(id=id, collection="c", text=text, **kw)
    return row


def run(spec: str, rows: list[dict[str, Any]]):
    table = pa.Table.from_pylist(rows, schema=MEMORIES_SCHEMA)
    out, rej, report = apply_spec(duckdb.connect(), parse_spec(spec), table)
    return out.to_arrow_table().to_pylist(), rej.to_arrow_table().to_pylist(), report


def test_split_text_is_lossless_and_cuts_after_whitespace() -> None:
    text = "alpha beta gamma delta epsilon"
    parts = split_text(text, 10)
    assert "".join(parts) == text
    assert all(0 < len(p) <= 10 for p in parts)
    assert parts == ["alpha ", "beta gamma", " delta ", "epsilon"]  # cut after a space if any
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # no whitespace: hard cut
    assert split_text("short", 10) == ["short"]


def test_split_before_and_after_rows() -> None:
    long_text = "alpha beta gamma delta"  # 22 chars
    before = [
        mem("a", "fits", metadata='{"k":1}'),
        mem("b", long_text, metadata='{"k":2,"big":12345678901234567890}', importance=0.5),
        mem("c", None),
        mem("d", "y" * 10, metadata="[1,2]"),  # exactly at the limit: untouched
    ]
    out, rej, report = run(SPLIT, before)
    assert rej == []
    assert [r["id"] for r in out] == ["a", "b", "c", "d", "b~part2", "b~part3"]
    assert out[0] == before[0] and out[2] == before[2] and out[3] == before[3]
    parts = [out[1], out[4], out[5]]
    assert "".join(p["text"] for p in parts) == long_text
    assert all(len(p["text"]) <= 10 for p in parts)
    for k, p in enumerate(parts, start=1):
        meta = json.loads(p["metadata"])
        assert meta["_fit_text"] == {"of": "b", "part": k, "parts": 3, "original_chars": 22}
        assert meta["k"] == 2 and meta["big"] == 12345678901234567890  # exact, key kept
        assert p["importance"] == 0.5 and p["collection"] == "c"
    assert report.rows_in == 4 and report.rows_out == 6 and report.rejected == 0
    assert report.steps[0].counts == {"fitted": 1, "parts_added": 2}


def test_truncate_before_and_after_rows() -> None:
    before = [
        mem("a", "0123456789ABCDEF", metadata=None),
        mem("b", "ok"),
        mem("c", "€" * 12, metadata='"just a string"'),
    ]
    out, rej, report = run(TRUNC, before)
    assert rej == [] and [r["id"] for r in out] == ["a", "b", "c"]
    assert out[0]["text"] == "0123456789"
    assert json.loads(out[0]["metadata"]) == {
        "_fit_text": {"truncated": True, "original_chars": 16}
    }
    assert out[1] == before[1]
    assert out[2]["text"] == "€" * 10  # characters, not bytes
    assert json.loads(out[2]["metadata"]) == {
        "_original_metadata": "just a string",
        "_fit_text": {"truncated": True, "original_chars": 12},
    }
    assert report.rows_out == 3


def test_fidelity_of_fitted_fields_is_forgotten() -> None:
    fid = json.dumps({"absent": ["metadata"]})
    out, _, _ = run(TRUNC, [mem("a", "0123456789ABC", fidelity=fid)])
    # metadata was absent in the source; now it carries the note, so it must show in a dump
    assert out[0]["fidelity"] is None or "metadata" not in json.loads(out[0]["fidelity"]).get(
        "absent", []
    )


def test_a_later_step_rejecting_parts_reports_the_input_row() -> None:
    spec = SPLIT + "[[steps]]\nkind = 'filter'\nwhere = \"text NOT LIKE '%delta%'\"\n"
    out, rej, report = run(spec, [mem("x", "ok"), mem("b", "alpha beta gamma delta")])
    assert [r["id"] for r in rej] == ["b~part3"]
    assert rej[0]["row_index"] == 1  # the input row the part came from
    assert json.loads(rej[0]["raw"])["text"] == "alpha beta gamma delta"
    assert report.rows_in == 2 and report.rows_out == len(out) == 3 and report.rejected == 1


def test_part_id_clash_is_bad_input() -> None:
    with pytest.raises(BadInput, match=r"part id 'b~part2' is already an id"):
        run(SPLIT, [mem("b", "alpha beta gamma"), mem("b~part2", "x")])


@pytest.mark.parametrize(
    "body, message",
    [
        ("max_chars = 0", "whole number in"),
        ("max_chars = 1.5", "expected a whole number"),
        ("max_chars = true", "expected a whole number"),
        ("mode = 'chop'", "split|truncate"),
    ],
)
def test_bad_options_are_refused_by_validator_and_schema(body: str, message: str) -> None:
    text = f"[[steps]]\nkind = 'fit_text'\n{body}\n"
    with pytest.raises(BadInput, match=message):
        parse_spec(text)
    import tomllib

    assert not jsonschema.Draft202012Validator(json_schema()).is_valid(tomllib.loads(text))


def test_defaults_and_schema() -> None:
    spec = parse_spec("[[steps]]\nkind = 'fit_text'\n")
    assert spec.steps[0].options == {"max_chars": 100_000, "mode": "split"}
    assert json_schema()["$defs"]["fit_text"]["properties"]["max_chars"]["type"] == "integer"

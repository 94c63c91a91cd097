"""schemas/*.schema.json agree with longmem_etl/schema.py, and the sample dumps obey dump.schema.json.

The Arrow schemas in ``longmem_etl/schema.py`` are what the code writes; the JSON Schema files are
what people and other tools read. These tests make any drift between the two a failure. The
validator below implements exactly the JSON Schema (2020-12) keywords the files use, so the project
needs no extra dependency at run time; it is itself tested against rows that must fail, and
cross-checked against the ``jsonschema`` package (test extra), which also checks each file is a
valid 2020-12 schema.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa
import pytest

from longmem_etl.schema import COLLECTIONS_SCHEMA, MEMORIES_SCHEMA, REJECTED_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
SAMPLES = ROOT / "longmem_etl" / "sample_data"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
TABLES = {
    "memories": MEMORIES_SCHEMA,
    "collections": COLLECTIONS_SCHEMA,
    "rejected": REJECTED_SCHEMA,
}
JSON_TYPE_OF_ARROW = {
    "string": "string",
    "double": "number",
    "bool": "boolean",
    "int64": "integer",
    "timestamp[us, tz=UTC]": "string",
}
KEYWORDS = {
    "$schema", "$id", "$defs", "$ref", "title", "description", "type", "const", "anyOf",
    "properties", "required", "additionalProperties", "items", "format", "contentMediaType",
    "x-arrow-type",
}  # fmt: skip
RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


# --------------------------------------------------------------------------------------------
# a validator for the subset of JSON Schema 2020-12 the files use


def is_type(value: Any, typ: str) -> bool:
    if typ == "null":
        return value is None
    if typ == "boolean":
        return isinstance(value, bool)
    if typ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ == "string":
        return isinstance(value, str)
    if typ == "array":
        return isinstance(value, list)
    if typ == "object":
        return isinstance(value, dict)
    raise AssertionError(f"unknown type {typ}")


def is_datetime(value: str) -> bool:
    m = RFC3339.match(value)
    if not m:
        return False
    offset = "+00:00" if m.group(4) in "Zz" else m.group(4)
    try:
        datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{offset}")
    except ValueError:
        return False
    return True


def same_json(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def validate(
    value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$"
) -> list[str]:
    """Every violation of ``schema`` by ``value``, as 'path: problem' strings (empty when valid)."""
    unknown = set(schema) - KEYWORDS
    assert not unknown, f"validator does not implement {unknown}"
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        return validate(value, root["$defs"][ref.removeprefix("#/$defs/")], root, path)
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(is_type(value, t) for t in types):
            return [f"{path}: {type(value).__name__} is not {'/'.join(types)}"]
    if "const" in schema and not same_json(value, schema["const"]):
        errors.append(f"{path}: must be {schema['const']!r}")
    if "anyOf" in schema and all(validate(value, s, root, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches no alternative")
    if schema.get("format") == "date-time" and isinstance(value, str) and not is_datetime(value):
        errors.append(f"{path}: {value!r} is not an RFC 3339 date-time")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(item, schema["additionalProperties"], root, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], root, f"{path}[{i}]")
    return errors


def validate_dump(dump: Any) -> list[str]:
    schema = load_schema("dump")
    return validate(dump, schema, schema)


# --------------------------------------------------------------------------------------------
# table schemas == longmem_etl/schema.py


@pytest.mark.parametrize("table", sorted(TABLES))
def test_table_schema_file_matches_arrow_schema(table: str) -> None:
    doc = load_schema(table)
    arrow: pa.Schema = TABLES[table]
    assert doc["$schema"] == DRAFT
    assert doc["type"] == "object" and doc["additionalProperties"] is False
    props = doc["properties"]
    assert list(props) == arrow.names, "same columns in the same order"
    assert doc["required"] == arrow.names
    for field in arrow:
        prop = props[field.name]
        assert prop["x-arrow-type"] == str(field.type), field.name
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        assert ("null" in types) == field.nullable, f"{field.name}: nullability"
        assert [t for t in types if t != "null"] == [JSON_TYPE_OF_ARROW[str(field.type)]]
        assert (prop.get("format") == "date-time") == pa.types.is_timestamp(field.type)
        assert prop["description"].strip(), f"{field.name}: say what it holds"


def test_json_columns_are_marked_as_json() -> None:
    marked = {
        (table, name)
        for table in TABLES
        for name, prop in load_schema(table)["properties"].items()
        if prop.get("contentMediaType") == "application/json"
    }
    assert marked == {
        ("memories", "metadata"),
        ("memories", "extra"),
        ("memories", "fidelity"),
        ("collections", "raw"),
        ("rejected", "raw"),
    }


def test_dump_schema_knows_every_memory_field() -> None:
    doc = load_schema("dump")
    assert doc["$schema"] == DRAFT
    memory = doc["$defs"]["memory"]
    known = [n for n in MEMORIES_SCHEMA.names if n not in {"extra", "fidelity"}]
    assert list(memory["properties"]) == known
    assert memory["additionalProperties"] is True and doc["additionalProperties"] is True


# --------------------------------------------------------------------------------------------
# sample dumps against dump.schema.json


@pytest.mark.parametrize(
    "name", ["acme.json", "globex-dirty.json", "acme-small.json", "bom.json", "bad/bad-rows.json"]
)
def test_valid_files_have_the_dump_shape(name: str) -> None:
    dump = json.loads((SAMPLES / name).read_bytes().removeprefix(b"\xef\xbb\xbf"))
    errors = validate_dump(dump)
    if name != "bad/bad-rows.json":
        assert errors == []
    else:  # the file is a valid dump; only rows inside memories are wrong
        assert errors and all(e.startswith("$.memories[") for e in errors)


def test_jsonl_header_and_lines_form_a_valid_dump() -> None:
    lines = (SAMPLES / "acme-small.jsonl").read_text().splitlines()
    dump = dict(json.loads(lines[0]), memories=[json.loads(line) for line in lines[1:]])
    assert validate_dump(dump) == []
    assert dump == json.loads((SAMPLES / "acme-small.json").read_text())


def test_bad_rows_are_exactly_the_rows_the_schema_refuses() -> None:
    """Every rejected row but the duplicate id (a cross-row rule JSON Schema cannot say) fails."""
    dump = json.loads((SAMPLES / "bad" / "bad-rows.json").read_bytes())
    bad = {int(re.match(r"\$\.memories\[(\d+)\]", e).group(1)) for e in validate_dump(dump)}
    assert bad == {1, 2, 3, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20}
    dup = dump["memories"][8]
    assert dup["id"] == dump["memories"][0]["id"] and 8 not in bad


@pytest.mark.parametrize(
    "name",
    [
        "top-level-array.json",
        "no-memories.json",
        "memories-not-list.json",
        "unknown-format-version.json",
    ],
)
def test_bad_files_fail_at_the_top_level(name: str) -> None:
    errors = validate_dump(json.loads((SAMPLES / "bad" / name).read_bytes()))
    assert errors and not any(e.startswith("$.memories[") for e in errors)


def test_validator_date_time_rules() -> None:
    good = ["2025-06-01T12:00:00.123456Z", "2024-05-06T09:08:09.5+02:00", "2024-05-06T07:08:09Z"]
    bad = ["2025-13-45T25:61:00Z", "yesterday", "2025-06-01 12:00:00", "2025-06-01T12:00:00"]
    assert all(is_datetime(v) for v in good)
    assert not any(is_datetime(v) for v in bad)


# --------------------------------------------------------------------------------------------
# cross-check with the jsonschema package


@pytest.mark.parametrize("name", ["dump", *sorted(TABLES)])
def test_schema_files_are_valid_2020_12(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema(name))


def test_jsonschema_package_agrees_with_the_small_validator() -> None:
    real = jsonschema.Draft202012Validator(load_schema("dump"))
    for name in ("acme.json", "globex-dirty.json", "bom.json"):
        dump = json.loads((SAMPLES / name).read_bytes().removeprefix(b"\xef\xbb\xbf"))
        assert list(real.iter_errors(dump)) == [], name
    for name in ("top-level-array.json", "no-memories.json", "memories-not-list.json"):
        assert not real.is_valid(json.loads((SAMPLES / "bad" / name).read_bytes())), name
    dump = json.loads((SAMPLES / "bad" / "bad-rows.json").read_bytes())
    flagged = {e.path[1] for e in real.iter_errors(dump)}
    mine = {int(re.match(r"\$\.memories\[(\d+)\]", e).group(1)) for e in validate_dump(dump)}
    # date-time "format" is only an annotation for jsonschema by default: rows 14 and 15 are bad
    # timestamps only the small validator asserts
    assert flagged == mine - {14, 15}

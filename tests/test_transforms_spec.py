"""Transform specs: parsing, defaults, step names, every kind of error, and agreement with the JSON
Schema in schemas/transform-spec.schema.json."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest
import tomllib

from longmem_etl.errors import BadInput
from longmem_etl.transforms.spec import STEPS, json_schema, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "schemas" / "transform-spec.schema.json"


def test_defaults_and_names() -> None:
    spec = parse_spec(
        """
        [[steps]]
        kind = "dedup"
        [[steps]]
        kind = "filter"
        where = "importance > 0.5"
        [[steps]]
        kind = "filter"
        name = "only-work"
        where = "collection = 'work'"
        [[steps]]
        kind = "redact"
        [[steps]]
        kind = "redact"
        """
    )
    assert [s.name for s in spec.steps] == ["dedup", "filter", "only-work", "redact#1", "redact#2"]
    assert spec.steps[0].options == {"by": ["collection", "container_tag"], "keep": "newest"}
    assert spec.steps[3].options["fields"] == ["text"]
    assert "card" in spec.steps[3].options["builtin"]
    assert len(spec.sha256) == 64


def test_now_accepts_toml_datetime_and_string() -> None:
    spec = parse_spec(
        """
        [[steps]]
        kind = "drop_expired"
        now = 2025-01-02T03:04:05Z
        [[steps]]
        kind = "drop_expired"
        now = "2025-01-02T05:04:05+02:00"
        [[steps]]
        kind = "drop_expired"
        now = "2025-01-02T03:04:05"
        """
    )
    want = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert [s.options["now"] for s in spec.steps] == [want, want, want]


BAD = [
    ("[[steps]]\nkind = 'nope'\n", "step 1: key 'kind': unknown step kind 'nope'"),
    ("[[steps]]\nname = 'x'\n", "step 1: key 'kind': missing"),
    (
        "[[steps]]\nkind = 'dedup'\nkeep = 'x'\n",
        "step 1 (dedup): key 'keep': expected one of newest|oldest|most_important|pinned_first, got 'x'",
    ),
    (
        "[[steps]]\nkind = 'drop_archived'\n[[steps]]\nkind = 'dedup'\nkep = 'newest'\n",
        "step 2 (dedup): key 'kep': unknown option",
    ),
    (
        "[[steps]]\nkind = 'dedup'\nby = 'collection'\n",
        "step 1 (dedup): key 'by': expected an array of strings",
    ),
    ("[[steps]]\nkind = 'dedup'\nby = ['nope']\n", "step 1 (dedup): key 'by': expected items from"),
    (
        "[[steps]]\nkind = 'drop_superseded'\nrequire_target = 'yes'\n",
        "key 'require_target': expected true or false",
    ),
    (
        "[[steps]]\nkind = 'set_defaults'\nimportance = 2\n",
        "step 1 (set_defaults): key 'importance': expected a number in [0, 1]",
    ),
    (
        "[[steps]]\nkind = 'set_defaults'\nimportance = '0.5'\n",
        "key 'importance': expected a number",
    ),
    (
        "[[steps]]\nkind = 'set_defaults'\n",
        "step 1 (set_defaults): needs at least one of category, importance, source",
    ),
    (
        "[[steps]]\nkind = 'rename_collections'\n",
        "step 1 (rename_collections): key 'map': required",
    ),
    (
        "[[steps]]\nkind = 'rename_collections'\nmap = {a = 1}\n",
        "key 'map': expected a table of strings",
    ),
    (
        "[[steps]]\nkind = 'drop_expired'\nnow = 'yesterday'\n",
        "key 'now': expected an ISO-8601 timestamp",
    ),
    (
        "[[steps]]\nkind = 'filter'\nwhere = 'no_such_column > 1'\n",
        "step 1 (filter): key 'where': invalid SQL predicate",
    ),
    ("[[steps]]\nkind = 'filter'\nwhere = 'importance >'\n", "key 'where': invalid SQL predicate"),
    ("[[steps]]\nkind = 'filter'\nwhere = 'text'\n", "key 'where': invalid SQL predicate"),
    (
        "[[steps]]\nkind = 'sql'\nquery = 'SELECT id FROM input'\n",
        "step 1 (sql): key 'query': invalid SQL query: must return exactly the memories columns; missing",
    ),
    ("[[steps]]\nkind = 'sql'\nquery = 'SELEC * FROM input'\n", "key 'query': invalid SQL query"),
    (
        "[[steps]]\nkind = 'sql'\nquery = 'SELECT * FROM other_table'\n",
        "key 'query': invalid SQL query",
    ),
    (
        "[[steps]]\nkind = 'redact'\npatterns = { X = '(unclosed' }\n",
        "step 1 (redact): key 'patterns': pattern 'X' does not compile",
    ),
    (
        "[[steps]]\nkind = 'redact'\npatterns = { email = 'x' }\n",
        "key 'patterns': pattern name 'email'",
    ),
    ("[[steps]]\nkind = 'redact'\nbuiltin = []\n", "nothing to redact"),
    (
        "[[steps]]\nkind = 'redact'\nfields = ['body']\n",
        "key 'fields': expected items from text|metadata",
    ),
    ("[[steps]]\nkind = 'drop_columns'\ncolumns = ['id']\n", "key 'columns': expected items from"),
    ("[[steps]]\nkind = 'keep_metadata_keys'\n", "key 'keys': required"),
    ("[[steps]]\nkind = 'map_container_tags'\n", "needs at least one of map, from_prefix"),
    (
        "[[steps]]\nkind = 'dedup'\nname = 'a'\n[[steps]]\nkind = 'drop_archived'\nname = 'a'\n",
        "step 2 (drop_archived): key 'name': 'a' is used by an earlier step",
    ),
    ("steps = []\n", "needs at least one [[steps]] table"),
    ("title = 'x'\n[[steps]]\nkind = 'dedup'\n", "unknown top-level key 'title'"),
    ("[[steps]\nkind = 'dedup'\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_specs_name_step_key_and_problem(text: str, message: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_spec(text, source="SPEC.toml")
    assert str(err.value).startswith("SPEC.toml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_load_spec_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read spec"):
        load_spec(tmp_path / "nope.toml")


def test_schema_file_is_generated_from_the_step_table() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
    jsonschema.Draft202012Validator.check_schema(json_schema())
    assert set(json_schema()["$defs"]) == set(STEPS)


# Structural cases: the hand validator and the JSON Schema must give the same verdict. (SQL, regex
# compilation and duplicate names are beyond a JSON Schema; they are covered by BAD above.)
STRUCTURAL_GOOD = [
    "[[steps]]\nkind = 'drop_archived'\n",
    "[[steps]]\nkind = 'dedup'\nby = []\nkeep = 'pinned_first'\nname = 'd'\n",
    "[[steps]]\nkind = 'drop_expired'\nnow = '2025-01-01T00:00:00Z'\n",
    "[[steps]]\nkind = 'map_container_tags'\nfrom_prefix = 'u-'\nto_prefix = 'user-'\n",
    "[[steps]]\nkind = 'set_defaults'\nimportance = 0.5\n",
    "[[steps]]\nkind = 'redact'\nbuiltin = []\npatterns = { NAME = 'Bob' }\nfields = ['text', 'metadata']\n",
    "[[steps]]\nkind = 'drop_columns'\ncolumns = ['metadata', 'extra']\n",
    "[[steps]]\nkind = 'keep_metadata_keys'\nkeys = []\n",
    "description = 'x'\n[[steps]]\nkind = 'normalize_text'\ntrim = false\ndrop_empty = true\n",
]
STRUCTURAL_BAD = [text for text, _ in BAD if "SQL" not in _ and "compile" not in _]
STRUCTURAL_BAD = [
    text
    for text, msg in BAD
    if not any(
        w in msg for w in ("SQL", "compile", "used by an earlier", "pattern name", "not valid TOML")
    )
]


def _schema_ok(text: str) -> bool:
    doc = tomllib.loads(text)
    return jsonschema.Draft202012Validator(json_schema()).is_valid(doc)


def _code_ok(text: str) -> bool:
    try:
        parse_spec(text)
    except BadInput:
        return False
    return True


@pytest.mark.parametrize("text", STRUCTURAL_GOOD + STRUCTURAL_BAD)
def test_validator_and_schema_agree(text: str) -> None:
    assert _code_ok(text) == _schema_ok(text)
    assert _code_ok(text) == (text in STRUCTURAL_GOOD)


def test_example_specs_are_valid_for_both() -> None:
    specs = sorted((ROOT / "longmem_etl" / "sample_data" / "specs").glob("*.toml"))
    assert {p.stem for p in specs} >= {"migration-hygiene", "gdpr-minimise"}
    for p in specs:
        load_spec(p)
        assert _schema_ok(p.read_text())

"""Transform specs: parse a TOML file of ``[[steps]]`` and validate every step before data is touched.

One table (`STEPS`) declares each step kind's options, types and defaults. The hand-written validator
and `json_schema()` (which writes ``schemas/transform-spec.schema.json``) both read that table, so what
the CLI accepts and what an editor's schema accepts cannot drift apart; a test checks they agree.

SQL and regex options are checked for real: DuckDB's parser decides that a predicate is one expression
and a query one SELECT over `input` (`sandbox.py`), both are bound against an empty table with the
memories schema in a sandboxed throwaway DuckDB that can read no file, and regexes are compiled by
DuckDB's RE2 (the engine that will run them) and refused if they can match the empty string, so
"valid here" means "runs later" - and a spec reaching outside its data is refused before any is read.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from longmem_etl.errors import BadInput
from longmem_etl.sqlquote import sql_ident, sql_str  # noqa: F401  (the step modules import them from here)
from longmem_etl.timestamps import to_datetime

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

BUILTIN_PATTERNS = ("secret", "email", "card", "ipv4", "ipv6", "phone")
DEDUP_KEEP = ("newest", "oldest", "most_important", "pinned_first")
DEDUP_BY = ("collection", "container_tag", "category", "source")
DROPPABLE_COLUMNS = (
    "metadata",
    "source",
    "container_tag",
    "category",
    "importance",
    "expires_at",
    "superseded_by",
    "extra",
)
REDACT_FIELDS = ("text", "metadata")
FIT_MODES = ("split", "truncate")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Opt:
    """One option of a step kind: its type, default and (for enums) its choices."""

    type: str  # bool|str|integer|number|timestamp|enum|enum_list|str_list|str_map|regex_map|sql_predicate|sql_query
    doc: str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class StepDef:
    doc: str
    options: dict[str, Opt]
    any_of: tuple[str, ...] = ()  # at least one of these options must be given


STEPS: dict[str, StepDef] = {
    "drop_archived": StepDef("Reject rows with archived = true.", {}),
    "drop_expired": StepDef(
        "Reject rows whose expires_at is at or before `now` (default: the run's current time).",
        {"now": Opt("timestamp", "ISO-8601 instant (naive means UTC); default: now")},
    ),
    "drop_superseded": StepDef(
        "Reject rows whose superseded_by is set (not NULL or blank).",
        {
            "require_target": Opt(
                "bool",
                "only reject when the superseding id is itself present in the step's input",
                default=False,
            )
        },
    ),
    "dedup": StepDef(
        "Reject exact duplicates of normalised text (NFKC, case folded, whitespace collapsed, trimmed).",
        {
            "by": Opt(
                "enum_list",
                "columns that scope duplicates ([] = whole snapshot)",
                default=["collection", "container_tag"],
                choices=DEDUP_BY,
            ),
            "keep": Opt("enum", "which copy survives", default="newest", choices=DEDUP_KEEP),
        },
    ),
    "rename_collections": StepDef(
        "Rename collections; mapping two names to one merges them.",
        {"map": Opt("str_map", "old name -> new name", required=True)},
    ),
    "map_container_tags": StepDef(
        "Rewrite container tags by exact map and/or prefix (map wins when both apply).",
        {
            "map": Opt("str_map", "old tag -> new tag"),
            "from_prefix": Opt("str", "tags starting with this prefix..."),
            "to_prefix": Opt("str", "...get it replaced by this one", default=""),
        },
        any_of=("map", "from_prefix"),
    ),
    "set_defaults": StepDef(
        "Fill NULL category / importance / source.",
        {
            "category": Opt("str", "category for rows without one"),
            "importance": Opt("number", "importance for rows without one", minimum=0, maximum=1),
            "source": Opt("str", "source for rows without one"),
        },
        any_of=("category", "importance", "source"),
    ),
    "normalize_text": StepDef(
        "Clean up text in place.",
        {
            "strip_control": Opt(
                "bool", "remove control characters (tab, newline and CR become spaces)", True
            ),
            "strip_zero_width": Opt("bool", "remove zero-width characters and BOMs", True),
            "collapse_whitespace": Opt("bool", "turn runs of whitespace into one space", True),
            "trim": Opt("bool", "remove leading and trailing whitespace", True),
            "drop_empty": Opt(
                "bool", "reject rows whose text is empty after normalising", default=False
            ),
        },
    ),
    "filter": StepDef(
        "Keep rows for which a SQL predicate is true; reject the rest (NULL counts as false).",
        {"where": Opt("sql_predicate", "DuckDB SQL boolean over memories columns", required=True)},
    ),
    "sql": StepDef(
        "Any SELECT over `input` returning the memories columns; ids that disappear are rejected.",
        {"query": Opt("sql_query", "SELECT ... FROM input", required=True)},
    ),
    "redact": StepDef(
        "Replace PII and secrets with typed placeholders ([EMAIL], [CARD], ...), counting each.",
        {
            "builtin": Opt(
                "enum_list",
                "built-in detectors to run",
                list(BUILTIN_PATTERNS),
                choices=BUILTIN_PATTERNS,
            ),
            "patterns": Opt("regex_map", 'extra detectors: NAME = "RE2 regex" -> [NAME]', {}),
            "fields": Opt("enum_list", "fields to redact", ["text"], choices=REDACT_FIELDS),
        },
    ),
    "drop_columns": StepDef(
        'Set optional fields to NULL ("extra" drops every unknown field).',
        {
            "columns": Opt(
                "enum_list", "fields to null out", required=True, choices=DROPPABLE_COLUMNS
            )
        },
    ),
    "fit_text": StepDef(
        "Fit texts longer than max_chars to a target's limit: split them into linked parts "
        '(mode "split": part 1 keeps the id, part k is <id>~part<k>, metadata._fit_text = '
        '{of, part, parts, original_chars}) or cut them (mode "truncate": metadata._fit_text = '
        "{truncated, original_chars}). Shorter texts are untouched.",
        {
            "max_chars": Opt(
                "integer",
                "longest text to keep, in characters (the embedded store refuses over 100000)",
                default=100_000,
                minimum=1,
            ),
            "mode": Opt("enum", "split or truncate", default="split", choices=FIT_MODES),
        },
    ),
    "keep_metadata_keys": StepDef(
        "Keep only the listed top-level keys of JSON-object metadata.",
        {"keys": Opt("str_list", "metadata keys to keep", required=True)},
    ),
}


@dataclass
class Step:
    """A validated step: 1-based position, kind, unique name, options with defaults filled in."""

    index: int
    kind: str
    name: str
    options: dict[str, Any]


@dataclass
class Spec:
    path: str
    sha256: str
    steps: list[Step] = field(default_factory=list)
    description: str | None = None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file; raises BadInput naming the step, key and problem."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise BadInput(f"{p}: cannot read spec: {exc.strerror or exc}") from None
    return parse_spec(data, source=str(p))


def parse_spec(data: bytes | str, *, source: str = "SPEC") -> Spec:
    """Parse TOML text and validate it (see `validate_spec`)."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"{source}: spec is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses per nesting level
        raise BadInput(f"{source}: not a usable spec: arrays or tables nested too deep") from None
    spec = validate_spec(doc, source=source)
    spec.sha256 = hashlib.sha256(raw).hexdigest()
    return spec


def validate_spec(doc: dict[str, Any], *, source: str = "SPEC") -> Spec:
    """Check a parsed spec document; return the Spec with defaults applied and names assigned."""
    if not isinstance(doc, dict):
        raise BadInput(f"{source}: a spec is a TOML table")
    for key in doc:
        if key not in ("steps", "description"):
            raise BadInput(
                f"{source}: unknown top-level key '{key}' (expected 'steps', 'description')"
            )
    description = doc.get("description")
    if description is not None and not isinstance(description, str):
        raise BadInput(f"{source}: key 'description': expected a string")
    steps_doc = doc.get("steps")
    if not isinstance(steps_doc, list) or not steps_doc:
        raise BadInput(f"{source}: needs at least one [[steps]] table")
    # default names: kind, or kind#N when several unnamed steps share a kind
    kinds = [s.get("kind") for s in steps_doc if isinstance(s, dict) and s.get("name") is None]
    steps: list[Step] = []
    seen_kind: dict[str, int] = {}
    names: set[str] = set()
    checker = _SqlChecker()
    for i, sdoc in enumerate(steps_doc, start=1):
        where = f"{source}: step {i}"
        if not isinstance(sdoc, dict):
            raise BadInput(f"{where}: expected a [[steps]] table")
        kind = sdoc.get("kind")
        if kind is None:
            raise BadInput(f"{where}: key 'kind': missing")
        if not isinstance(kind, str) or kind not in STEPS:
            raise BadInput(
                f"{where}: key 'kind': unknown step kind {kind!r} (known: {', '.join(STEPS)})"
            )
        where = f"{source}: step {i} ({kind})"
        sdef = STEPS[kind]
        opts: dict[str, Any] = {}
        for key, value in sdoc.items():
            if key in ("kind", "name"):
                continue
            if key not in sdef.options:
                known = ", ".join(["name", *sdef.options]) or "name"
                raise BadInput(f"{where}: key '{key}': unknown option (known: {known})")
            opts[key] = _check_value(value, sdef.options[key], f"{where}: key '{key}'", checker)
        for key, opt in sdef.options.items():
            if key not in opts:
                if opt.required:
                    raise BadInput(f"{where}: key '{key}': required")
                opts[key] = _copy_default(opt.default)
        if sdef.any_of and all(sdoc.get(k) is None for k in sdef.any_of):
            raise BadInput(f"{where}: needs at least one of {', '.join(sdef.any_of)}")
        if kind == "redact" and not opts["builtin"] and not opts["patterns"]:
            raise BadInput(f"{where}: key 'builtin': nothing to redact (no builtin, no patterns)")
        name = sdoc.get("name")
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise BadInput(f"{where}: key 'name': expected a non-empty string")
        else:
            count = kinds.count(kind)
            seen_kind[kind] = seen_kind.get(kind, 0) + 1
            name = kind if count == 1 else f"{kind}#{seen_kind[kind]}"
        if name in names:
            raise BadInput(f"{where}: key 'name': {name!r} is used by an earlier step")
        names.add(name)
        steps.append(Step(index=i, kind=kind, name=name, options=opts))
    return Spec(path=source, sha256="", steps=steps, description=description)


def _copy_default(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _tname(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def _check_value(value: Any, opt: Opt, where: str, checker: _SqlChecker) -> Any:
    t = opt.type
    if t == "bool":
        if not isinstance(value, bool):
            raise BadInput(f"{where}: expected true or false, got {_tname(value)} {value!r}")
        return value
    if t == "str":
        if not isinstance(value, str):
            raise BadInput(f"{where}: expected a string, got {_tname(value)} {value!r}")
        return value
    if t == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"{where}: expected a whole number, got {_tname(value)} {value!r}")
        if (opt.minimum is not None and value < opt.minimum) or (
            opt.maximum is not None and value > opt.maximum
        ):
            raise BadInput(
                f"{where}: expected a whole number in [{opt.minimum}, {opt.maximum}], got {value!r}"
            )
        return value
    if t == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"{where}: expected a number, got {_tname(value)} {value!r}")
        if (
            value != value
            or (opt.minimum is not None and value < opt.minimum)
            or (opt.maximum is not None and value > opt.maximum)
        ):
            raise BadInput(
                f"{where}: expected a number in [{opt.minimum}, {opt.maximum}], got {value!r}"
            )
        return float(value)
    if t == "enum":
        if not isinstance(value, str) or value not in opt.choices:
            raise BadInput(f"{where}: expected one of {'|'.join(opt.choices)}, got {value!r}")
        return value
    if t in ("enum_list", "str_list"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadInput(f"{where}: expected an array of strings, got {value!r}")
        if t == "enum_list":
            for v in value:
                if v not in opt.choices:
                    raise BadInput(
                        f"{where}: expected items from {'|'.join(opt.choices)}, got {v!r}"
                    )
        if len(set(value)) != len(value):
            raise BadInput(f"{where}: items repeat in {value!r}")
        if t == "enum_list" and opt.required and not value:
            raise BadInput(f"{where}: expected at least one item")
        return list(value)
    if t in ("str_map", "regex_map"):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise BadInput(
                f'{where}: expected a table of strings ("name" = "value"), got {value!r}'
            )
        if t == "regex_map":
            for name, rx in value.items():
                if not _NAME_RE.match(name) or name.lower() in BUILTIN_PATTERNS:
                    raise BadInput(
                        f"{where}: pattern name {name!r} must be letters/digits/_ and not a builtin name"
                    )
                if rx == "":
                    raise BadInput(f"{where}: pattern {name!r} is empty")
                err = checker.regex_error(rx)
                if err:
                    raise BadInput(f"{where}: pattern {name!r} does not compile: {err}")
                if checker.regex_matches_empty(rx):
                    raise BadInput(
                        f"{where}: pattern {name!r} can match the empty string (it would put a "
                        "placeholder between every character)"
                    )
        return dict(value)
    if t == "timestamp":
        return _parse_instant(value, where)
    if t == "sql_predicate":
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"{where}: expected a SQL predicate string")
        return checker.predicate(value.strip().rstrip(";").strip(), where)
    if t == "sql_query":
        if not isinstance(value, str) or not value.strip():
            raise BadInput(f"{where}: expected a SQL query string")
        value = value.strip().rstrip(";").strip()
        err = checker.query_error(value)
        if err:
            raise BadInput(f"{where}: invalid SQL query: {err}")
        return value
    raise AssertionError(t)


def _parse_instant(value: Any, where: str) -> datetime:
    """A TOML datetime or an ISO-8601 string; naive values are UTC."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date) and not isinstance(value, time):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = to_datetime(value)
        except ValueError:
            raise BadInput(f"{where}: expected an ISO-8601 timestamp, got {value!r}") from None
    else:
        raise BadInput(f"{where}: expected an ISO-8601 timestamp, got {_tname(value)} {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def parse_instant(value: Any, where: str = "--now") -> datetime:
    """Public form of the timestamp parser (for `--now`)."""
    return _parse_instant(value, where)


class _SqlChecker:
    """A throwaway sandboxed DuckDB (`sandbox.open_sandbox`, reading no file at all) holding an
    empty `input` with the memories schema, to parse and bind spec SQL against."""

    def __init__(self) -> None:
        self._con = None

    @property
    def con(self):
        if self._con is None:
            from longmem_etl.schema import MEMORIES_SCHEMA
            from longmem_etl.transforms.sandbox import open_sandbox

            self._con = open_sandbox()
            empty = MEMORIES_SCHEMA.empty_table()
            self._con.register("_empty_memories", empty)
            self._con.execute("CREATE TABLE input AS SELECT * FROM _empty_memories")
            self._con.unregister("_empty_memories")
        return self._con

    def _error(self, sql: str) -> str | None:
        try:
            if len(self.con.extract_statements(sql)) != 1:  # never run more than was checked
                return "not one statement"
            self.con.execute(sql)
        except Exception as exc:  # DuckDB's own message says what is wrong
            return " ".join(str(exc).split())[:300]
        return None

    def predicate(self, pred: str, where: str) -> str:
        """DuckDB's rendering of a valid filter predicate; BadInput naming ``where`` otherwise."""
        from longmem_etl.transforms.sandbox import canonical_predicate

        try:
            text = canonical_predicate(self.con, pred)
        except ValueError as exc:
            raise BadInput(f"{where}: invalid SQL predicate: {exc}") from None
        err = self._error(f"SELECT count(*) FROM input WHERE ({text})")
        if not err:
            typ = str(
                self.con.execute(f"SELECT ({text}) AS p FROM input LIMIT 0").description[0][1]
            )
            if typ.upper() not in ("BOOLEAN", "BOOL", '"NULL"', "NULL"):
                err = f"not a boolean expression (it is {typ})"
        if err:
            raise BadInput(f"{where}: invalid SQL predicate: {err}")
        return text

    def query_error(self, query: str) -> str | None:
        from longmem_etl.schema import MEMORIES_SCHEMA
        from longmem_etl.transforms.sandbox import check_query

        try:
            check_query(self.con, query)
        except ValueError as exc:
            return str(exc)
        # the same wrapping the sql step runs it in (newline: a trailing -- comment stays inside)
        err = self._error(f"SELECT * FROM ({query}\n) LIMIT 0")
        if err:
            return err
        cols = [d[0] for d in self.con.execute(f"SELECT * FROM ({query}\n) LIMIT 0").description]
        want = MEMORIES_SCHEMA.names
        if sorted(cols) != sorted(want):
            missing = [c for c in want if c not in cols]
            extra = [c for c in cols if c not in want]
            return (
                "must return exactly the memories columns"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
            )
        return None

    def regex_error(self, rx: str) -> str | None:
        return self._error(f"SELECT regexp_matches('', {sql_str(rx)})")

    def regex_matches_empty(self, rx: str) -> bool:
        """Whether a (compiling) regex can match the empty string anywhere."""
        # An empty match would put a placeholder between every character: refuse any pattern that
        # matches the empty string somewhere. RE2 has no lookaround, so where an empty match can
        # happen depends only on ^ $ \b \B (and (?m)); these probes cover every such position.
        return self.con.execute(
            f"SELECT bool_or(list_contains(regexp_extract_all(p, {sql_str(rx)}), '')) "
            "FROM unnest(?) t(p)",
            [list(_EMPTY_PROBES)],
        ).fetchall()[0][0]


_EMPTY_PROBES = ("", " ", "a", "aa", "a a", " a ", "a\nb", "\n", " \n ", ".")


_ISO_PATTERN = r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([Zz]|[+-]\d{2}:?\d{2})?$"


def _opt_schema(opt: Opt) -> dict[str, Any]:
    t = opt.type
    s: dict[str, Any]
    if t == "bool":
        s = {"type": "boolean"}
    elif t == "str":
        s = {"type": "string"}
    elif t in ("number", "integer"):
        s = {"type": t}
        if opt.minimum is not None:
            s["minimum"] = opt.minimum
        if opt.maximum is not None:
            s["maximum"] = opt.maximum
    elif t == "enum":
        s = {"type": "string", "enum": list(opt.choices)}
    elif t == "enum_list":
        s = {"type": "array", "items": {"enum": list(opt.choices)}, "uniqueItems": True}
        if opt.required:
            s["minItems"] = 1
    elif t == "str_list":
        s = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    elif t == "str_map":
        s = {"type": "object", "additionalProperties": {"type": "string"}}
    elif t == "regex_map":
        s = {
            "type": "object",
            "propertyNames": {"pattern": _NAME_RE.pattern},
            "additionalProperties": {"type": "string", "minLength": 1, "format": "regex"},
        }
    elif t == "timestamp":
        s = {"type": "string", "format": "date-time", "pattern": _ISO_PATTERN}
    elif t in ("sql_predicate", "sql_query"):
        s = {"type": "string", "minLength": 1}
    else:  # pragma: no cover
        raise AssertionError(t)
    s["description"] = opt.doc
    if opt.default is not None:
        s["default"] = opt.default
    return s


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec, generated from `STEPS`.

    It checks structure (kinds, keys, types, enums); SQL, regex compilation, unique step names and
    pattern names that shadow builtins are checked only by `validate_spec`.
    """
    defs: dict[str, Any] = {}
    for kind, sdef in STEPS.items():
        props: dict[str, Any] = {
            "kind": {"const": kind},
            "name": {
                "type": "string",
                "minLength": 1,
                "description": "label in reports and rejected.stage",
            },
        }
        props.update({k: _opt_schema(o) for k, o in sdef.options.items()})
        d: dict[str, Any] = {
            "description": sdef.doc,
            "type": "object",
            "properties": props,
            "required": ["kind", *[k for k, o in sdef.options.items() if o.required]],
            "additionalProperties": False,
        }
        if sdef.any_of:
            d["anyOf"] = [{"required": [k]} for k in sdef.any_of]
        if kind == "redact":
            d["anyOf"] = [
                {"not": {"required": ["builtin"]}},
                {"properties": {"builtin": {"minItems": 1}}},
                {"required": ["patterns"], "properties": {"patterns": {"minProperties": 1}}},
            ]
        defs[kind] = d
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/11data/longmem-etl/schemas/transform-spec.schema.json",
        "title": "longmem-etl transform spec",
        "description": "Ordered cleaning steps ([[steps]] tables) applied by `longmem-etl clean` "
        "and `migrate --spec`. Every removed row lands in rejected.parquet.",
        "type": "object",
        "properties": {
            "description": {"type": "string"},
            "steps": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {"kind": {"enum": list(STEPS)}},
                    "oneOf": [{"$ref": f"#/$defs/{k}"} for k in STEPS],
                },
            },
        },
        "required": ["steps"],
        "additionalProperties": False,
        "$defs": defs,
    }

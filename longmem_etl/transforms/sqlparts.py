"""SQL building blocks shared by the steps: the column list, helper functions registered on the DuckDB
connection, and the dump-form JSON of a row (for ``rejected.raw``).

The helpers are vectorised where they run on every row (the dedup key is an Arrow UDF over whole
vectors using pyarrow's RE2/utf8proc kernels; Luhn is pure SQL). The one plain-Python helper,
`lm_fidelity_forget`, only ever sees the rare rows whose ``fidelity`` is set.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import unicodedata

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from longmem_etl.schema import MEMORIES_SCHEMA, MEMORY_FIELDS, TIMESTAMP_FIELDS

MEM_COLS: list[str] = list(MEMORIES_SCHEMA.names)
ROW = "_row"  # position of the row in the transform's input, carried through every step
_TYPES = {
    "string": "VARCHAR",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}
SQL_TYPES: dict[str, str] = {f.name: _TYPES[str(f.type)] for f in MEMORIES_SCHEMA}
# Invisible characters that carry no meaning: ZWSP, word joiner, BOM, soft hyphen, Mongolian vowel
# separator. ZWJ/ZWNJ (U+200D/U+200C) are kept: emoji sequences and Indic/Persian text need them.
ZERO_WIDTH = r"\x{200B}\x{2060}\x{FEFF}\x{00AD}\x{180E}"
# Whitespace other than the plain space (RE2 class body): ASCII controls that are whitespace, NEL,
# NO-BREAK SPACE and the other Unicode space separators, line/paragraph separators.
WS_NONSPACE = (
    r"\t\n\x{0B}\f\r\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
)
WS = " " + WS_NONSPACE
# What "collapse whitespace" has to touch: runs of 2+ whitespace, or any single non-space one.
# (Matching every single space, as `\s+` would, makes the replace several times slower.)
COLLAPSE_RE = rf"[{WS}]{{2,}}|[{WS_NONSPACE}]"
# Control characters that are not whitespace (removed by normalize_text and the dedup key).
CONTROL_RE = r"[\x00-\x08\x0E-\x1F\x7F-\x{84}\x{86}-\x{9F}]"
# Texts outside this (printable ASCII, single spaces, no edge spaces) have lower(text) as dedup key.
NEEDS_FULL_KEY_RE = r"[^\x20-\x7E]|  |^ | $"

# Luhn over the digits of `s` (separators ignored), 13-19 digits. Pure SQL, so it runs vectorised.
LUHN_MACRO = """
CREATE OR REPLACE TEMP MACRO lm_luhn_digits(d) AS
  length(d) BETWEEN 13 AND 19 AND list_sum(list_transform(range(length(d)), lambda i:
    CASE WHEN i % 2 = 1
         THEN CAST(substr(reverse(d), i + 1, 1) AS INTEGER) * 2
              - CASE WHEN CAST(substr(reverse(d), i + 1, 1) AS INTEGER) >= 5 THEN 9 ELSE 0 END
         ELSE CAST(substr(reverse(d), i + 1, 1) AS INTEGER) END)) % 10 = 0;
CREATE OR REPLACE TEMP MACRO lm_luhn(s) AS lm_luhn_digits(regexp_replace(s, '[^0-9]', '', 'g'));
"""


@functools.cache
def _folds_beyond_lower() -> str:
    """An RE2 class of the characters whose case folding differs from lowercasing after NFKC
    (ß → ss, final ς → σ, Cherokee, Greek with iota subscript, ...): ~270 of them."""
    chars = (chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    odd = []
    for ch in chars:
        low = unicodedata.normalize("NFKC", ch).lower()
        if low != low.casefold():
            odd.append(f"\\x{{{ord(ch):X}}}")
    return "[" + "".join(odd) + "]"


def _casefold(x: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Full case folding of NFKC+lowercased texts: Arrow has no casefold kernel, so the few rows
    holding a character where it differs from lowercasing are folded in Python."""
    rows = pc.match_substring_regex(x, _folds_beyond_lower())
    if not pc.any(rows).as_py():
        return x
    if isinstance(x, pa.ChunkedArray):  # replace_with_mask wants plain arrays
        x, rows = x.combine_chunks(), rows.combine_chunks()
    folded = [unicodedata.normalize("NFKC", s.casefold()) for s in pc.filter(x, rows).to_pylist()]
    return pc.replace_with_mask(x, rows, pa.array(folded, pa.string()))


def dedup_key(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Normalised text for exact dedup: NFKC, case folded (so "Straße" and "STRASSE" match),
    zero-width and non-whitespace control characters removed, whitespace collapsed, trimmed. A
    superset of `normalize_text`, so dedup finds the same duplicates before or after it."""
    x = pc.utf8_normalize(texts, form="NFKC")
    x = _casefold(pc.utf8_lower(x))
    x = pc.replace_substring_regex(x, pattern=f"[{ZERO_WIDTH}]|{CONTROL_RE}", replacement="")
    x = pc.replace_substring_regex(x, pattern=COLLAPSE_RE, replacement=" ")
    return pc.utf8_trim_whitespace(x)


def dedup_key_sql(col: str = "text") -> str:
    """The dedup key in SQL: the Arrow UDF only for texts where it can differ from ``lower()``."""
    return (
        f"CASE WHEN regexp_matches({col}, '{NEEDS_FULL_KEY_RE}') "
        f"THEN lm_dedup_key({col}) ELSE lower({col}) END"
    )


_FLOAT_MARK = "\x00lmF"
_FLOAT_RE = re.compile(r'"\\u0000lmF([^"\\]*)"')


def fidelity_forget(fidelity: str | None, changed: list[str] | None) -> str | None:
    """Drop ``changed`` fields from a fidelity object's ``raw`` and ``absent`` (their new value wins).

    Numbers are carried as their original text so nothing is rounded; NULL when nothing is left.
    """
    if fidelity is None or not changed:
        return fidelity
    doc = json.loads(
        fidelity, parse_float=lambda s: _FLOAT_MARK + s, parse_int=lambda s: _FLOAT_MARK + s
    )
    if not isinstance(doc, dict):
        return fidelity
    raw = doc.get("raw")
    if isinstance(raw, dict):
        for f in changed:
            raw.pop(f, None)
        if not raw:
            doc.pop("raw")
    absent = doc.get("absent")
    if isinstance(absent, list):
        doc["absent"] = [a for a in absent if a not in changed]
        if not doc["absent"]:
            doc.pop("absent")
    if not doc:
        return None
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return _FLOAT_RE.sub(lambda m: m.group(1), text)


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Install the helper functions on ``con`` (idempotent)."""
    for name in ("lm_dedup_key", "lm_fidelity_forget"):
        with contextlib.suppress(Exception):
            con.remove_function(name)
    con.create_function(
        "lm_dedup_key", dedup_key, ["VARCHAR"], "VARCHAR", type="arrow", side_effects=False
    )
    con.create_function(
        "lm_fidelity_forget",
        fidelity_forget,
        ["VARCHAR", "VARCHAR[]"],
        "VARCHAR",
        null_handling="special",
        side_effects=False,
    )
    con.execute(LUHN_MACRO)


def ts_iso(expr: str) -> str:
    """ISO-8601 UTC text of a TIMESTAMPTZ expression, independent of the session time zone, in the
    snapshot reader's canonical form (``...SSZ``; a fraction only when it is not zero)."""
    return f"replace(strftime(timezone('UTC', {expr}), '%Y-%m-%dT%H:%M:%S.%fZ'), '.000000Z', 'Z')"


def _field_json(name: str) -> str:
    col = f'"{name}"'
    if name == "metadata":
        return f"coalesce({col}, 'null')"  # already JSON text: spliced verbatim
    if name in TIMESTAMP_FIELDS:
        return f"coalesce(to_json({ts_iso(col)})::VARCHAR, 'null')"
    return f"coalesce(to_json({col})::VARCHAR, 'null')"


def dump_json_sql() -> str:
    """SQL expression: the row as its dump-form JSON object text.

    Known fields in dump order (metadata and unknown fields spliced verbatim), then the unknown fields
    from ``extra``; for rows with ``fidelity``, absent fields are left out and raw originals win.
    (``id`` is never absent, so the known part is never empty.)
    """
    parts = []
    for name in MEMORY_FIELDS:
        key = json.dumps(name)
        value = _field_json(name)
        part = (
            f"CASE WHEN fidelity IS NULL THEN '{key}:' || {value} "
            f"WHEN list_contains(coalesce(json_extract_string(fidelity, '$.absent[*]'), []), '{name}') "
            f"THEN NULL "
            f"WHEN json_exists(fidelity, '$.raw.{name}') "
            f"THEN '{key}:' || json_extract(fidelity, '$.raw.{name}')::VARCHAR "
            f"ELSE '{key}:' || {value} END"
        )
        parts.append(part)
    known = "concat_ws(',', " + ", ".join(parts) + ")"
    extra = "trim(extra)"
    return (
        f"'{{' || {known} || CASE WHEN extra IS NULL OR regexp_matches({extra}, '^\\{{\\s*\\}}$') THEN '' "
        f"ELSE ',' || substr({extra}, 2, length({extra}) - 2) END || '}}'"
    )


def fidelity_sql(changed: dict[str, tuple[str, str]], fid: str = "fidelity") -> str:
    """SQL for the new ``fidelity`` after a rewrite: fields whose value changed (new IS DISTINCT FROM
    old) lose their ``raw``/``absent`` entries so the new value is what a dump shows.

    ``changed`` maps field -> (new expression, old expression); only evaluated on rows with fidelity.
    """
    typed = {f: pair for f, pair in changed.items() if f in MEMORY_FIELDS}
    if not typed:
        return fid
    items = ", ".join(
        f"CASE WHEN ({new}) IS DISTINCT FROM ({old}) THEN '{f}' END"
        for f, (new, old) in typed.items()
    )
    return (
        f"CASE WHEN {fid} IS NULL THEN NULL "
        f"ELSE lm_fidelity_forget({fid}, list_filter([{items}], lambda x: x IS NOT NULL)) END"
    )

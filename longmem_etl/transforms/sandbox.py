"""The DuckDB session every spec runs in, and the parser checks spec SQL passes before that.

Spec SQL (``filter.where``, ``sql.query``) comes from a file a user may not have written. Two layers
keep it inside the data it is meant to transform:

1. **Parsing** (at `load_spec`, before any data is read), with DuckDB's own parser: a ``where`` must
   be exactly one expression (``duckdb.SQLExpression``; what runs is DuckDB's re-rendering of it, so
   a trailing comment or a stray parenthesis cannot reach the SQL around it) that names no table; a
   ``query`` must be exactly one ``SELECT`` whose only table is ``input`` (or its own CTEs).
2. **The session** (`open_sandbox`): external access off (no file, no ATTACH, no COPY, no network)
   except reading the exact files the engine itself reads, extensions never installed or
   autoloaded, configuration locked so SQL cannot undo any of it. The validation session reads no
   file at all, so ``read_text('/etc/passwd')`` is refused while the spec is loaded.

Spills (a step bigger than memory) go to a private directory under the system temp dir that DuckDB
creates only when it needs it and removes on close - never ``.tmp`` in the working directory.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import duckdb

from longmem_etl.sqlquote import sql_str

SETTINGS: dict[str, Any] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "preserve_insertion_order": True,  # the engine's positional joins rely on input order
}


def open_sandbox(readable: Iterable[str | os.PathLike] = ()) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB session that can read only ``readable`` files and change nothing outside.

    ``SET`` of any option fails once it is open (``lock_configuration``): set what you need in
    `SETTINGS` instead.
    """
    spill = os.path.join(tempfile.gettempdir(), f"longmem-etl-spill-{uuid.uuid4().hex[:12]}")
    con = duckdb.connect(config={**SETTINGS, "temp_directory": spill})
    try:
        paths = [os.fspath(p) for p in readable]
        if paths:
            con.execute(f"SET allowed_paths = [{', '.join(sql_str(p) for p in paths)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


# ------------------------------------------------------------------------------------------------
# parse-tree checks


def _serialize(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of ``sql`` (SELECT statements only), or ValueError with its message."""
    text = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    tree = json.loads(text)
    if tree.get("error"):
        raise ValueError(tree.get("error_message") or "not a query")
    return tree


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            yield cur
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


# Table functions spec SQL may call: they make values, they read nothing. Every other one
# (``query('...')`` runs a SQL string the parser checks never saw; ``read_parquet`` of the input,
# ``duckdb_settings()``, ``glob`` ...) is refused at load, whatever the session would allow.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})


def _table_functions(tree: dict[str, Any]) -> list[str]:
    """Names of the table functions a parse tree calls that are not in `ALLOWED_TABLE_FUNCTIONS`."""
    refused: list[str] = []
    for d in _walk(tree):
        if d.get("type") == "TABLE_FUNCTION":
            function = d.get("function") or {}
            name = str(function.get("function_name") or "?")
            schema = function.get("schema") or function.get("catalog") or ""
            if schema or name.lower() not in ALLOWED_TABLE_FUNCTIONS:
                refused.append(".".join(p for p in (schema, name) if p))
    return refused


def _refuse_table_functions(tree: dict[str, Any]) -> None:
    refused = _table_functions(tree)
    if refused:
        allowed = ", ".join(sorted(ALLOWED_TABLE_FUNCTIONS))
        raise ValueError(
            f"calls table function {refused[0]!r}: spec SQL may only use {allowed} "
            "(the data comes from the row or from `input`)"
        )


def _tables(tree: dict[str, Any]) -> tuple[list[str], set[str]]:
    """(tables named, CTE names defined) anywhere in a parse tree."""
    named: list[str] = []
    ctes: set[str] = set()
    for d in _walk(tree):
        if d.get("type") == "BASE_TABLE" and "table_name" in d:
            parts = [d.get("catalog_name") or "", d.get("schema_name") or "", d["table_name"]]
            named.append(".".join(p for p in parts if p))
        cte_map = d.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map") or []:
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    ctes.add(entry["key"])
    return named, ctes


def canonical_predicate(con: duckdb.DuckDBPyConnection, pred: str) -> str:
    """DuckDB's rendering of ``pred`` if it is exactly one expression naming no table.

    Raises ValueError saying why not. The rendering (not the user's text) is what the filter runs.
    """
    if "{input}" in pred:
        raise ValueError("'{input}' is reserved")
    try:
        expr = duckdb.SQLExpression(pred)
    except duckdb.Error as exc:
        raise ValueError(f"not one SQL expression: {_first_line(exc)}") from None
    text = str(expr)
    tree = _serialize(con, f"SELECT ({text})")
    statements = tree.get("statements") or []
    node = statements[0].get("node", {}) if len(statements) == 1 else {}
    if node.get("type") != "SELECT_NODE" or len(node.get("select_list") or []) != 1:
        raise ValueError("not one SQL expression")
    named, _ = _tables(tree)
    if named:
        raise ValueError(
            f"names table {named[0]!r}: a filter sees only the row's columns "
            "(use a `sql` step to look at other rows through `input`)"
        )
    _refuse_table_functions(tree)
    return text


def check_query(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """ValueError unless ``query`` is exactly one SELECT whose only table is ``input`` (or a CTE)."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise ValueError(_first_line(exc)) from None
    if len(statements) != 1:
        raise ValueError(f"expected exactly one SELECT statement, got {len(statements)} statements")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = kind.name if hasattr(kind, "name") else str(kind)
        raise ValueError(f"expected a SELECT statement, got {name}")
    tree = _serialize(con, query)
    named, ctes = _tables(tree)
    outside = [t for t in named if t != "input" and t not in ctes]
    if outside:
        raise ValueError(f"names table {outside[0]!r}: a sql step sees only `input`")
    _refuse_table_functions(tree)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__

"""DuckDB over every snapshot under a root: views for analysts, no copy of the data.

Layout (`docs/snapshots.md`): ``ROOT/tenant=<t>/snapshot=<ts>/{memories,collections,rejected}.parquet`` plus
``manifest.json``. The file lists come from the manifests, never from a blind glob: a directory
without ``manifest.json`` is a write in progress or a crash leftover, not a snapshot, and a file a
manifest does not list is not part of it.

Views (each with ``tenant`` and ``snapshot`` columns first). ``tenant`` is the exact tenant name
from the snapshot's manifest (``snapshots.layout.snapshot_tenant``), never the folder's encoding, so
``東京``, ``a/b`` and ``Acme`` show as themselves and old snapshots show the name their manifest
recorded; the columns come from a small (file -> tenant, snapshot) table joined on each row's file,
not from Hive partition parsing of the path.

- ``memories``        every memory of every snapshot; ``metadata``/``extra``/``fidelity`` as ``JSON``
- ``latest_memories`` the same, restricted to the newest snapshot of each tenant
- ``collections``     every collection entry; ``raw`` as ``JSON``
- ``rejected``        every rejected row; ``raw`` stays ``VARCHAR`` (a row that was refused may be
                      anything, and one odd row must not make the whole view unreadable)
- ``snapshots``       one row per snapshot, from its manifest: counts, exported_at, the manifest

The views live in schema ``longmem`` (each marked by a comment), put first on the connection's
search path: a user's ``--database`` file keeps its own objects (its ``main.snapshots`` survives),
and a ``longmem`` schema holding anything this module did not make is refused, never overwritten.

Column names and types come from ``longmem_etl/schema.py``; an empty root gives the same columns
with no rows. The views name the files they read, so they show the snapshots present when they
were built: ``refresh(con, root)`` (or a new ``connect``) picks up newer ones.

Read-only sessions (``read_only=True``, used by ``longmem-etl sql``) are enforced by DuckDB itself
in three layers: the catalog is a database opened read-only (no CREATE/INSERT/DROP...), file access
is switched off except for reading the snapshot files the views name, with the configuration locked;
and ``run_query`` lets through only statements DuckDB's own parser classifies as ``SELECT`` (which
includes SHOW, DESCRIBE, SUMMARIZE, VALUES, FROM-first), a PIVOT (which DuckDB parses as several
statements) or an ``EXPLAIN [ANALYZE]`` of one - this last
layer is what stops ``COPY ... TO`` from overwriting a snapshot file DuckDB must be allowed to read.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from longmem_etl.errors import BadInput
from longmem_etl.schema import COLLECTIONS_SCHEMA, MEMORIES_SCHEMA, REJECTED_SCHEMA
from longmem_etl.snapshots.integrity import safe_file_name, verify_at_open
from longmem_etl.snapshots.layout import list_snapshots, snapshot_tenant
from longmem_etl.snapshots.manifest import MANIFEST, read_manifest
from longmem_etl.sqlquote import sql_ident as _ident
from longmem_etl.sqlquote import sql_str as _lit

VIEWS = ("memories", "latest_memories", "collections", "rejected", "snapshots")
SCHEMA = "longmem"  # the views' own schema: a user's database keeps its objects untouched
VIEW_MARK = "longmem-etl warehouse view"  # comment on each view: what may be replaced
JSON_COLUMNS = {
    "memories": ("metadata", "extra", "fidelity"),
    "collections": ("raw",),
    "rejected": (),
}
TABLE_SCHEMAS = {
    "memories": MEMORIES_SCHEMA,
    "collections": COLLECTIONS_SCHEMA,
    "rejected": REJECTED_SCHEMA,
}
SNAPSHOT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tenant", "VARCHAR"),
    ("snapshot", "VARCHAR"),
    ("snapshot_at", "TIMESTAMPTZ"),
    ("path", "VARCHAR"),
    ("exported_at", "TIMESTAMPTZ"),
    ("created_at", "TIMESTAMPTZ"),
    ("memories", "BIGINT"),
    ("collections", "BIGINT"),
    ("rejected", "BIGINT"),
    ("source", "JSON"),
    ("parent", "VARCHAR"),
    ("tool_version", "VARCHAR"),
    ("manifest", "JSON"),
)
ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT}
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?", re.IGNORECASE)


@dataclass(frozen=True)
class SnapshotEntry:
    """One committed snapshot: where it is and which files its manifest lists."""

    tenant: str
    snapshot: str
    path: Path
    files: frozenset[str]
    # an increment: the SELECT of its full state (``incremental.state_sql``) and the files it reads
    state: str | None = None
    state_files: tuple[str, ...] = ()


def discover(root: str | os.PathLike, *, trust: bool = False) -> list[SnapshotEntry]:
    """Every committed snapshot under ``root`` (oldest first); a missing root has none.

    Each is checked against its manifest first (``snapshots.integrity.verify_at_open``: manifest
    checksum, file names inside the snapshot, sizes, Parquet row counts); ``trust=True`` skips that
    (only the manifest is read). A manifest that cannot be read or a damaged snapshot is an error
    (``BadInput`` naming it), not a silent skip: a warehouse quietly missing a snapshot would give
    wrong answers. An encrypted snapshot's
    entry points at its private decrypted copy; an increment's carries the SELECT of its full state
    (``snapshots.incremental.state_sql``: base + increments, anti-joined on later layers).
    """
    from longmem_etl.snapshots.crypto import is_encrypted, plain_dir
    from longmem_etl.snapshots.incremental import is_increment, state_sql

    found = []
    for snap in list_snapshots(root):
        manifest = read_manifest(snap) if trust else verify_at_open(snap)
        origin = snap  # names the entry even when the files are read from a decrypted copy
        state = None
        if is_increment(manifest):  # memories: the chain's full state, computed by DuckDB
            sql, state_files = state_sql(snap)
            state = (sql, tuple(str(f) for f in state_files))
        if is_encrypted(manifest):  # the views read a private decrypted copy
            plain = plain_dir(snap, manifest)
            manifest = read_manifest(plain)
            snap = plain
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise BadInput(f"{snap / MANIFEST}: no 'files' object")
        if trust:  # even trusted, a manifest may never name a file outside its snapshot
            for name in files:
                if safe_file_name(snap, name) is None:
                    raise BadInput(f"snapshot {snap}: {name}: not a file name inside the snapshot")
        found.append(
            SnapshotEntry(
                tenant=snapshot_tenant(origin, manifest),
                snapshot=origin.name.split("=", 1)[1],
                path=snap.resolve(),
                files=frozenset(files),
                state=state[0] if state else None,
                state_files=state[1] if state else (),
            )
        )
    return found


def latest_per_tenant(entries: Iterable[SnapshotEntry]) -> list[SnapshotEntry]:
    """The newest snapshot of each tenant (names are UTC times, so the largest is the newest)."""
    latest: dict[str, SnapshotEntry] = {}
    for e in entries:
        if e.tenant not in latest or e.snapshot > latest[e.tenant].snapshot:
            latest[e.tenant] = e
    return sorted(latest.values(), key=lambda e: e.tenant)


# ------------------------------------------------------------------------------------------------
# SQL for the views


def duckdb_type(typ: pa.DataType) -> str:
    """The DuckDB type a Parquet column of Arrow type ``typ`` reads as."""
    if pa.types.is_timestamp(typ):
        return "TIMESTAMPTZ" if typ.tz else "TIMESTAMP"
    mapping = {
        pa.string(): "VARCHAR",
        pa.large_string(): "VARCHAR",
        pa.float64(): "DOUBLE",
        pa.bool_(): "BOOLEAN",
        pa.int64(): "BIGINT",
        pa.int32(): "INTEGER",
    }
    if typ not in mapping:
        raise TypeError(f"no DuckDB type for {typ}")
    return mapping[typ]


def _table_columns(table: str) -> list[tuple[str, str, bool]]:
    """``(name, duckdb type, is JSON)`` for the view of ``table``, hive columns first."""
    cols = [("tenant", "VARCHAR", False), ("snapshot", "VARCHAR", False)]
    for field in TABLE_SCHEMAS[table]:
        is_json = field.name in JSON_COLUMNS[table]
        cols.append((field.name, "JSON" if is_json else duckdb_type(field.type), is_json))
    return cols


def _empty_select(columns: Iterable[tuple[str, str]]) -> str:
    cols = ", ".join(f"CAST(NULL AS {typ}) AS {_ident(name)}" for name, typ in columns)
    return f"SELECT {cols} LIMIT 0"


_FILE_COLUMN = "__longmem_etl_file"


def _names_table(pairs: list[tuple[str, SnapshotEntry]]) -> str:
    """``(VALUES (file, tenant, snapshot), ...) AS names(...)``: who each file belongs to."""
    rows = ", ".join(f"({_lit(f)}, {_lit(e.tenant)}, {_lit(e.snapshot)})" for f, e in pairs)
    return f"(VALUES {rows}) AS names({_FILE_COLUMN}, tenant, snapshot)"


def table_view_sql(table: str, entries: Iterable[SnapshotEntry]) -> str:
    """``SELECT`` reading ``table`` from each snapshot whose manifest lists it."""
    cols = _table_columns(table)
    entries = list(entries)
    pairs = [
        (str(e.path / f"{table}.parquet"), e) for e in entries if f"{table}.parquet" in e.files
    ]
    states = [e for e in entries if table == "memories" and e.state is not None]
    if not pairs and not states:
        return _empty_select((name, typ) for name, typ, _ in cols)
    select = ", ".join(
        f"names.{_ident(name)}"
        if name in ("tenant", "snapshot")
        else f"CAST(data.{_ident(name)} AS JSON) AS {_ident(name)}"
        if is_json
        else f"data.{_ident(name)}"
        for name, _, is_json in cols
    )
    parts = []
    if pairs:
        listing = ", ".join(_lit(f) for f, _ in pairs)
        parts.append(
            f"SELECT {select} FROM read_parquet([{listing}], hive_partitioning = false, "
            f"union_by_name = true, filename = {_lit(_FILE_COLUMN)}) AS data "
            f"JOIN {_names_table(pairs)} USING ({_ident(_FILE_COLUMN)})"
        )
    for e in states:  # an increment's full state, named like the files above
        parts.append(
            f"SELECT {select} FROM (SELECT * EXCLUDE (_seq) FROM ({e.state})) AS data, "
            f"(SELECT {_lit(e.tenant)} AS tenant, {_lit(e.snapshot)} AS snapshot) AS names"
        )
    return " UNION ALL BY NAME ".join(parts) if len(parts) > 1 else parts[0]


def snapshots_view_sql(entries: Iterable[SnapshotEntry]) -> str:
    """One row per snapshot, read from its ``manifest.json`` (so counts are what was committed)."""
    pairs = [(str(e.path / MANIFEST), e) for e in entries]
    if not pairs:
        return _empty_select(SNAPSHOT_COLUMNS)
    listing = ", ".join(_lit(m) for m, _ in pairs)
    return f"""
        WITH m AS (
            SELECT filename AS {_FILE_COLUMN}, CAST(content AS JSON) AS manifest
            FROM read_text([{listing}])
        ), named AS (
            SELECT tenant, snapshot, {_FILE_COLUMN} AS filename, manifest
            FROM m JOIN {_names_table(pairs)} USING ({_FILE_COLUMN})
        )
        SELECT tenant,
               snapshot,
               strptime(snapshot || '+0000', '%Y%m%dT%H%M%SZ%z') AS snapshot_at,
               regexp_replace(filename, '[/\\\\]manifest\\.json$', '') AS path,
               TRY_CAST(manifest->>'$.exported_at' AS TIMESTAMPTZ) AS exported_at,
               TRY_CAST(manifest->>'$.created_at' AS TIMESTAMPTZ) AS created_at,
               TRY_CAST(manifest->>'$.counts.memories' AS BIGINT) AS memories,
               TRY_CAST(manifest->>'$.counts.collections' AS BIGINT) AS collections,
               TRY_CAST(manifest->>'$.counts.rejected' AS BIGINT) AS rejected,
               manifest->'$.source' AS source,
               manifest->>'$.parent' AS parent,
               manifest->>'$.tool.version' AS tool_version,
               manifest
        FROM named
    """


def view_statements(entries: list[SnapshotEntry]) -> dict[str, str]:
    """``{view name: CREATE OR REPLACE VIEW longmem.<name> ...}`` for the given snapshots."""
    bodies = {
        "memories": table_view_sql("memories", entries),
        "latest_memories": table_view_sql("memories", latest_per_tenant(entries)),
        "collections": table_view_sql("collections", entries),
        "rejected": table_view_sql("rejected", entries),
        "snapshots": snapshots_view_sql(entries),
    }
    return {
        name: f"CREATE OR REPLACE VIEW {SCHEMA}.{name} AS {sql}" for name, sql in bodies.items()
    }


def _claim_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``longmem`` schema, or check that it holds only views this module made.

    A user's ``--database`` file is theirs: its own tables and views (``main.snapshots``, ...)
    are never touched, and a ``longmem`` schema of theirs is refused rather than overwritten.
    """
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    foreign = con.execute(
        """
        SELECT name FROM (
            SELECT table_name AS name FROM duckdb_tables()
            WHERE database_name = current_database() AND schema_name = $s
            UNION ALL
            SELECT view_name FROM duckdb_views()
            WHERE database_name = current_database() AND schema_name = $s AND NOT internal
              AND (comment IS DISTINCT FROM $mark OR NOT list_contains($ours, view_name))
            UNION ALL
            SELECT sequence_name FROM duckdb_sequences()
            WHERE database_name = current_database() AND schema_name = $s
            UNION ALL
            SELECT DISTINCT function_name FROM duckdb_functions()
            WHERE database_name = current_database() AND schema_name = $s AND NOT internal
        ) ORDER BY name LIMIT 1
        """,
        {"s": SCHEMA, "mark": VIEW_MARK, "ours": list(VIEWS)},
    ).fetchall()
    if foreign:
        db = con.execute("SELECT current_database()").fetchall()[0][0]
        raise BadInput(
            f"database {db!r}: schema '{SCHEMA}' holds {foreign[0][0]!r}, which longmem-etl did "
            "not make; it keeps its views there and will not replace yours (use another --database)"
        )


def refresh(
    con: duckdb.DuckDBPyConnection, root: str | os.PathLike, *, trust: bool = False
) -> list[SnapshotEntry]:
    """(Re)create the views in schema ``longmem`` on ``con`` over the snapshots now under ``root``
    (returned), and put that schema first on the connection's search path (``trust``: see
    ``discover``)."""
    entries = discover(root, trust=trust)
    _claim_schema(con)
    for name, sql in view_statements(entries).items():
        try:
            con.execute(sql)
        except duckdb.Error as exc:  # e.g. a damaged Parquet file under --trust
            raise BadInput(f"{root}: cannot build the {name} view: {one_line(exc)}") from None
        con.execute(f"COMMENT ON VIEW {SCHEMA}.{name} IS {_lit(VIEW_MARK)}")
    _use_schema(con)
    return entries


def _use_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Unqualified names find the warehouse views first, then the database's own objects."""
    con.execute(f"SET search_path = '{SCHEMA},main'")


# ------------------------------------------------------------------------------------------------
# connections


def connect(
    root: str | os.PathLike,
    database: str | os.PathLike | None = None,
    read_only: bool = False,
    trust: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the warehouse views over every snapshot under ``root``.

    ``database``: a DuckDB file to keep the views in (created if missing, views refreshed), so other
    tools can open it; None for an in-memory catalog. ``read_only=True`` returns a locked-down
    session (see the module doc): the views are refreshed first, then the catalog is reopened
    read-only and file access is limited to reading the snapshot files. Use ``run_query`` on it.
    Every snapshot is checked against its manifest first unless ``trust`` (see ``discover``).
    """
    if not read_only:
        con = _open(database, read_only=False)
        try:
            refresh(con, root, trust=trust)
        except BaseException:
            con.close()
            raise
        return con

    tmpdir = None
    if database is None:  # DuckDB cannot open an in-memory catalog read-only: use a private file
        tmpdir = tempfile.mkdtemp(prefix="longmem-etl-warehouse-")
        database = Path(tmpdir) / "warehouse.duckdb"
    try:
        writer = _open(database, read_only=False)
        try:
            entries = refresh(writer, root, trust=trust)
        finally:
            writer.close()
        con = _open(database, read_only=True)
    finally:
        if tmpdir is not None:  # the open read-only connection keeps what it needs
            shutil.rmtree(tmpdir, ignore_errors=True)
    try:
        _lock_down(con, entries)
    except BaseException:
        con.close()
        raise
    return con


def _open(database: str | os.PathLike | None, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    target = ":memory:" if database is None else str(database)
    if database is not None and not read_only:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(target, read_only=read_only)
    except duckdb.Error as exc:
        raise BadInput(f"{target}: cannot open DuckDB database ({one_line(exc)})") from None
    con.execute("SET TimeZone = 'UTC'")  # timestamps print and convert as UTC, like the data
    return con


def _lock_down(con: duckdb.DuckDBPyConnection, entries: list[SnapshotEntry]) -> None:
    """Allow reading exactly the files the views name; no other file access; config locked."""
    paths = [str(e.path / MANIFEST) for e in entries]
    paths += [str(e.path / name) for e in entries for name in sorted(e.files)]
    paths += sorted({f for e in entries for f in e.state_files})
    _use_schema(con)
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    if paths:
        con.execute(f"SET allowed_paths = [{', '.join(_lit(p) for p in paths)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


# ------------------------------------------------------------------------------------------------
# queries


def one_line(exc: BaseException) -> str:
    """DuckDB's message on one line (its later lines point at the SQL with a caret)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """BadInput unless every statement in ``sql`` is a query (per DuckDB's parser)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadInput(f"SQL error: {one_line(exc)}") from None
    if not statements:
        raise BadInput("SQL error: no statement given")
    for st in statements:
        if st.type in ALLOWED_STATEMENTS or _is_pivot(st):
            continue
        if st.type == duckdb.StatementType.EXPLAIN and _EXPLAIN.match(st.query):
            # EXPLAIN ANALYZE runs its statement: allowed only when DuckDB parses that as a query
            inner = con.extract_statements(_EXPLAIN.sub("", st.query, count=1))
            if len(inner) == 1 and inner[0].type in ALLOWED_STATEMENTS:
                continue
        kind = st.type.name if hasattr(st.type, "name") else str(st.type)
        raise BadInput(
            f"read-only: {kind} statements are not allowed (only queries: SELECT, WITH, "
            "SHOW, DESCRIBE, SUMMARIZE, EXPLAIN)"
        )


_QUERY_START = {"pivot", "unpivot", "pivot_wider", "pivot_longer", "select", "from"}


def _is_pivot(st: Any) -> bool:
    """A PIVOT is parsed as several statements (a type for its columns, then the query), which
    DuckDB reports as MULTI. Accepted when the statement's first word (DuckDB's tokenizer; comments
    and parentheses skipped) starts a query: COPY, ATTACH, SET, EXPORT... each start with their own."""
    if st.type != duckdb.StatementType.MULTI:
        return False
    text = st.query
    for pos, kind in duckdb.tokenize(text):
        if kind == duckdb.token_type.comment:
            continue
        word = text[pos:].split(None, 1)[0] if text[pos:].strip() else ""
        if kind == duckdb.token_type.operator and word.startswith("("):
            continue
        return kind == duckdb.token_type.keyword and word.lower().rstrip("(") in _QUERY_START
    return False


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyConnection:
    """Execute a read-only ``sql`` (every statement checked; the last one's result is returned).

    Errors become ``BadInput`` with DuckDB's message on one line.
    """
    check_read_only(con, sql)
    try:
        return con.execute(sql)
    except duckdb.Error as exc:
        raise BadInput(f"SQL error: {one_line(exc)}") from None


def columns(con: duckdb.DuckDBPyConnection, view: str) -> list[tuple[str, str]]:
    """``[(name, type)]`` of a view, as DuckDB describes it."""
    rows = con.execute(f"DESCRIBE {_ident(view)}").fetchall()
    return [(r[0], r[1]) for r in rows]


def json_column_names(description: Any) -> set[int]:
    """Indexes of the ``JSON``-typed columns in a cursor description."""
    return {i for i, d in enumerate(description or []) if str(d[1]).upper() == "JSON"}


__all__ = [
    "SCHEMA",
    "VIEWS",
    "SnapshotEntry",
    "check_read_only",
    "columns",
    "connect",
    "discover",
    "json_column_names",
    "latest_per_tenant",
    "one_line",
    "refresh",
    "run_query",
    "view_statements",
]

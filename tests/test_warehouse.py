"""The warehouse answers real questions over real snapshots, and its read-only mode really is.

Snapshots are made by the real converter from the committed sample dumps; queries run in real
DuckDB; the CLI runs as a subprocess. The read-only tests go around ``run_query`` too, to show that
DuckDB itself refuses writes (not only our statement check).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from cli_support import run_cli

from longmem_etl import warehouse
from longmem_etl.errors import BadInput
from longmem_etl.schema import COLLECTIONS_SCHEMA, MEMORIES_SCHEMA, REJECTED_SCHEMA
from longmem_etl.snapshots import convert_dump

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "longmem_etl" / "sample_data"


def load(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_bytes())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """acme (two snapshots: full, then small), globex-dirty, bad-rows; plus two decoys."""
    root = tmp_path_factory.mktemp("warehouse")
    first = convert_dump(SAMPLES / "acme.json", root, progress=False)
    convert_dump(SAMPLES / "globex-dirty.json", root, progress=False)
    convert_dump(SAMPLES / "bad" / "bad-rows.json", root, progress=False)
    convert_dump(SAMPLES / "acme-small.json", root, tenant="acme", progress=False)
    # Decoys: an uncommitted copy named later than everything (no manifest), and a temp dir.
    decoy = first.path.parent / "snapshot=20991231T235959Z"
    shutil.copytree(first.path, decoy)
    (decoy / "manifest.json").unlink()
    shutil.copytree(first.path, root / ".tmp-leftover")
    return root


@pytest.fixture(scope="module")
def con(root: Path) -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(root)
    yield c
    c.close()


@pytest.fixture(scope="module")
def ro(root: Path) -> duckdb.DuckDBPyConnection:
    c = warehouse.connect(root, read_only=True)
    yield c
    c.close()


def q(c: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return c.execute(sql).fetchall()


# ------------------------------------------------------------------------------------------------
# views and their columns


def expected_columns(schema: Any, json_cols: set[str]) -> list[str]:
    return ["tenant", "snapshot"] + list(schema.names)


@pytest.mark.parametrize("empty", ["missing", "empty", "only-uncommitted"])
def test_empty_root_gives_empty_views_with_the_right_columns(tmp_path: Path, empty: str) -> None:
    root = tmp_path / "root"
    if empty != "missing":
        root.mkdir()
    if empty == "only-uncommitted":
        (root / "tenant=a" / "snapshot=20250101T000000Z").mkdir(parents=True)
    c = warehouse.connect(root)
    for view in warehouse.VIEWS:
        assert q(c, f"SELECT count(*) FROM {view}") == [(0,)], view
    assert [n for n, _ in warehouse.columns(c, "memories")] == [
        "tenant",
        "snapshot",
        *MEMORIES_SCHEMA.names,
    ]
    assert warehouse.columns(c, "latest_memories") == warehouse.columns(c, "memories")
    assert [n for n, _ in warehouse.columns(c, "collections")] == [
        "tenant",
        "snapshot",
        *COLLECTIONS_SCHEMA.names,
    ]
    assert [n for n, _ in warehouse.columns(c, "rejected")] == [
        "tenant",
        "snapshot",
        *REJECTED_SCHEMA.names,
    ]
    assert [n for n, _ in warehouse.columns(c, "snapshots")][:4] == [
        "tenant",
        "snapshot",
        "snapshot_at",
        "path",
    ]


def test_column_types_match_a_populated_root(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    empty = warehouse.connect(tmp_path)
    for view in warehouse.VIEWS:
        assert warehouse.columns(empty, view) == warehouse.columns(con, view), view
    types = dict(warehouse.columns(con, "memories"))
    assert types["metadata"] == "JSON" and types["extra"] == "JSON" and types["fidelity"] == "JSON"
    assert types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["importance"] == "DOUBLE" and types["pinned"] == "BOOLEAN"


def test_only_committed_snapshots_are_seen(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    snaps = q(
        con,
        "SELECT tenant, snapshot, memories, collections, rejected FROM snapshots ORDER BY tenant, snapshot",
    )
    assert [(t, m, c, r) for t, _, m, c, r in snaps] == [
        ("acme", 2000, 6, 0),
        ("acme", 50, 6, 0),
        ("badrows", 6, 2, 17),
        ("globex", 1000, 5, 0),
    ]
    assert "20991231T235959Z" not in {s for _, s, *_ in snaps}
    assert q(con, "SELECT count(*) FROM memories") == [(2000 + 50 + 6 + 1000,)]
    assert q(con, "SELECT count(DISTINCT snapshot) FROM memories WHERE tenant = 'acme'") == [(2,)]


def test_snapshots_view_reads_the_manifests(con: duckdb.DuckDBPyConnection) -> None:
    rows = q(
        con,
        "SELECT tenant, strftime(exported_at, '%Y-%m-%dT%H:%M:%S.%fZ'), path, manifest->>'$.counts.memories' "
        "FROM snapshots WHERE tenant = 'globex'",
    )
    assert len(rows) == 1
    tenant, exported, path, count = rows[0]
    assert exported == load("globex-dirty.json")["exported_at"]
    assert Path(path, "manifest.json").is_file() and count == "1000"


# ------------------------------------------------------------------------------------------------
# real questions


def test_counts_per_collection(con: duckdb.DuckDBPyConnection) -> None:
    acme = load("acme.json")["memories"]
    got = dict(
        q(
            con,
            "SELECT m.collection, count(*) FROM memories m JOIN snapshots s USING (tenant, snapshot) "
            "WHERE m.tenant = 'acme' AND s.memories = 2000 GROUP BY ALL",
        )
    )
    assert got == dict(Counter(m["collection"] for m in acme))
    names = [
        r[0]
        for r in q(con, "SELECT name FROM collections WHERE tenant = 'globex' ORDER BY position")
    ]
    assert names == ["default", "assistant", "研究 📚", "legacy", "scratch"]


def test_latest_memories_is_the_newest_committed_snapshot_per_tenant(
    con: duckdb.DuckDBPyConnection,
) -> None:
    got = dict(q(con, "SELECT tenant, count(*) FROM latest_memories GROUP BY tenant"))
    assert got == {"acme": 50, "globex": 1000, "badrows": 6}
    small_ids = {m["id"] for m in load("acme-small.json")["memories"]}
    assert {
        r[0] for r in q(con, "SELECT id FROM latest_memories WHERE tenant = 'acme'")
    } == small_ids
    latest = q(con, "SELECT tenant, max(snapshot) FROM snapshots GROUP BY tenant ORDER BY tenant")
    assert q(con, "SELECT DISTINCT tenant, snapshot FROM latest_memories ORDER BY tenant") == latest


def test_json_extraction_from_metadata(con: duckdb.DuckDBPyConnection) -> None:
    acme = load("acme.json")["memories"]
    expected = Counter(
        m["metadata"]["src"]
        for m in acme
        if isinstance(m["metadata"], dict) and "src" in m["metadata"]
    )
    got = dict(
        q(
            con,
            "SELECT metadata->>'$.src', count(*) FROM memories WHERE tenant = 'acme' "
            "AND snapshot = (SELECT min(snapshot) FROM snapshots WHERE tenant = 'acme') "
            "AND metadata->>'$.src' IS NOT NULL GROUP BY ALL",
        )
    )
    assert got == dict(expected)
    shapes = dict(
        q(
            con,
            "SELECT json_type(metadata), count(*) FROM memories WHERE tenant = 'acme' GROUP BY ALL",
        )
    )
    assert {"OBJECT", "ARRAY", "VARCHAR", "UBIGINT", "DOUBLE", "BOOLEAN"} <= set(shapes)


def test_exact_numbers_and_unicode_come_through(con: duckdb.DuckDBPyConnection) -> None:
    globex = {m["id"]: m for m in load("globex-dirty.json")["memories"]}
    bigs = q(
        con,
        "SELECT id, metadata->>'$.big' FROM memories WHERE tenant = 'globex' AND metadata->>'$.big' IS NOT NULL",
    )
    assert bigs and all(int(v) == globex[i]["metadata"]["big"] for i, v in bigs)
    texts = dict(q(con, "SELECT id, text FROM memories WHERE tenant = 'globex'"))
    assert texts == {i: m["text"] for i, m in globex.items()}
    assert any("\x00" in t for t in texts.values())
    extra = dict(
        q(
            con,
            "SELECT id, extra->>'$.\"x-legacy-id\"' FROM memories WHERE tenant = 'globex' AND extra IS NOT NULL",
        )
    )
    assert any(v is not None and int(v) == globex[i]["x-legacy-id"] for i, v in extra.items())


def test_rejected_rows_and_accounting(con: duckdb.DuckDBPyConnection) -> None:
    rows = q(
        con,
        "SELECT row_index, stage, raw FROM rejected WHERE tenant = 'badrows' ORDER BY row_index",
    )
    assert [r[0] for r in rows] == [1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20]
    assert {r[1] for r in rows} == {"convert"}
    original = load("bad/bad-rows.json")["memories"]
    assert all(json.loads(raw) == original[i] for i, _, raw in rows)
    balance = q(
        con,
        "SELECT s.memories + s.rejected, (SELECT count(*) FROM memories m WHERE m.tenant = s.tenant) "
        "+ (SELECT count(*) FROM rejected r WHERE r.tenant = s.tenant) FROM snapshots s WHERE tenant = 'badrows'",
    )
    assert balance == [(23, 23)]


# ------------------------------------------------------------------------------------------------
# read-only


def test_read_only_session_answers_queries(ro: duckdb.DuckDBPyConnection) -> None:
    assert warehouse.run_query(ro, "SELECT count(*) FROM longmem.latest_memories").fetchall() == [
        (1056,)
    ]
    for sql in ("SHOW TABLES", "DESCRIBE memories", "SUMMARIZE collections", "EXPLAIN SELECT 1",
                "EXPLAIN ANALYZE SELECT count(*) FROM memories", "FROM snapshots",
                "WITH x AS (SELECT 1 AS a) SELECT * FROM x", "VALUES (1), (2)"):  # fmt: skip
        warehouse.run_query(ro, sql).fetchall()


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t AS SELECT 1",
        "CREATE TEMP TABLE t AS SELECT 1",
        "INSERT INTO memories SELECT * FROM memories",
        "DROP VIEW memories",
        "SELECT 1; DROP VIEW memories",
        "COPY (SELECT 1) TO '{out}'",
        "EXPORT DATABASE '{dir}'",
        "ATTACH '{db}' AS other",
        "SET enable_external_access = true",
        "PRAGMA threads = 1",
        "CHECKPOINT",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'",
        "INSTALL httpfs",
    ],
)
def test_writes_are_refused(ro: duckdb.DuckDBPyConnection, tmp_path: Path, sql: str) -> None:
    sql = sql.format(out=tmp_path / "out.csv", dir=tmp_path / "exp", db=tmp_path / "x.duckdb")
    with pytest.raises(BadInput, match="read-only"):
        warehouse.run_query(ro, sql)
    assert list(tmp_path.iterdir()) == []
    assert q(ro, "SELECT count(*) FROM memories") == [(3056,)]


def test_duckdb_itself_enforces_read_only(
    ro: duckdb.DuckDBPyConnection, root: Path, tmp_path: Path
) -> None:
    """Bypassing our statement check: DuckDB refuses catalog writes and file access on its own."""
    snap_file = next(root.glob("tenant=globex/snapshot=*/memories.parquet"))
    before = snap_file.read_bytes()
    attempts = [
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW memories",
        f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
        f"COPY (SELECT 1 AS a) TO '{snap_file}' (FORMAT parquet)",
        f"EXPORT DATABASE '{tmp_path / 'exp'}'",
        "SELECT * FROM read_text('/etc/hostname')",
        "SET enable_external_access = true",
        "SET allowed_paths = ['/']",
    ]
    for sql in attempts:
        with pytest.raises(duckdb.Error):
            ro.execute(sql)
    assert list(tmp_path.iterdir()) == []
    assert snap_file.read_bytes() == before
    assert q(ro, "SELECT count(*) FROM memories") == [(3056,)]


def test_sql_errors_are_one_line_bad_input(ro: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(BadInput) as err:
        warehouse.run_query(ro, "SELECT nope FROM memories")
    assert (
        "\n" not in str(err.value) and "nope" in str(err.value) and "Binder Error" in str(err.value)
    )
    with pytest.raises(BadInput, match="Parser Error"):
        warehouse.run_query(ro, "SELEC 1")
    with pytest.raises(BadInput, match="Catalog Error"):
        warehouse.run_query(ro, "SELECT * FROM no_such_view")


# ------------------------------------------------------------------------------------------------
# a persistent database file


def test_database_file_keeps_views_and_refreshes(root: Path, tmp_path: Path) -> None:
    db = tmp_path / "wh" / "warehouse.duckdb"
    warehouse.connect(root, database=db).close()
    with duckdb.connect(str(db), read_only=True) as other:  # any DuckDB client can open it
        assert other.execute("SELECT count(*) FROM longmem.latest_memories").fetchall() == [(1056,)]
    new_root = tmp_path / "more"
    shutil.copytree(root, new_root, ignore=shutil.ignore_patterns(".tmp-*"))
    convert_dump(SAMPLES / "acme-small.json", new_root, tenant="initech", progress=False)
    c = warehouse.connect(new_root, database=db, read_only=True)
    try:
        got = dict(
            warehouse.run_query(
                c, "SELECT tenant, count(*) FROM latest_memories GROUP BY ALL"
            ).fetchall()
        )
        assert got["initech"] == 50
        with pytest.raises(duckdb.Error):
            c.execute("CREATE TABLE t AS SELECT 1")
    finally:
        c.close()


def test_broken_manifest_is_reported(tmp_path: Path) -> None:
    res = convert_dump(SAMPLES / "acme-small.json", tmp_path, progress=False)
    (res.path / "manifest.json").write_text("{not json")
    with pytest.raises(BadInput, match="manifest"):
        warehouse.connect(tmp_path)


# ------------------------------------------------------------------------------------------------
# the CLI verb


def test_cli_csv_and_table(root: Path) -> None:
    sql = "SELECT tenant, count(*) AS n FROM latest_memories GROUP BY tenant ORDER BY tenant"
    proc = run_cli("sql", sql, "--root", str(root), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert list(csv.reader(io.StringIO(proc.stdout))) == [
        ["tenant", "n"],
        ["acme", "50"],
        ["badrows", "6"],
        ["globex", "1000"],
    ]
    proc = run_cli("sql", sql, "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["tenant", "|", "n"] and lines[-1] == "(3 rows)"
    assert any(line.startswith("globex") and line.endswith("1000") for line in lines)


def test_cli_json_nests_json_columns(root: Path) -> None:
    globex = {m["id"]: m for m in load("globex-dirty.json")["memories"]}
    proc = run_cli(
        "sql",
        "SELECT id, metadata, created_at, pinned FROM latest_memories WHERE tenant = 'globex' AND metadata->>'$.big' IS NOT NULL",
        "--root",
        str(root),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and any(row["created_at"] for row in rows)
    for row in rows:
        assert row["metadata"] == globex[row["id"]]["metadata"]  # big ints exact, nested objects
        assert row["created_at"] is None or row["created_at"].endswith("+00:00")
        assert row["pinned"] in (True, False, None)


def test_cli_table_escapes_control_characters(root: Path) -> None:
    proc = run_cli(
        "sql", "SELECT text FROM memories WHERE text LIKE 'NUL byte%'", "--root", str(root)
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x00" not in proc.stdout and "NUL byte\\x00in" in proc.stdout


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("SELECT nope FROM memories", "Binder Error"),
        ("SELEC 1", "Parser Error"),
        ("DELETE FROM memories", "read-only"),
        ("COPY memories TO 'x.csv'", "read-only"),
    ],
)
def test_cli_errors_exit_2_with_one_line(root: Path, tmp_path: Path, sql: str, needle: str) -> None:
    proc = run_cli("sql", sql, "--root", str(root), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_root_and_help(tmp_path: Path) -> None:
    proc = run_cli("sql", "SELECT 1", "--root", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no such directory" in proc.stderr
    proc = run_cli("sql", "--help")
    assert proc.returncode == 0 and "latest_memories" in proc.stdout and "examples:" in proc.stdout


def test_copy_onto_a_snapshot_file_is_refused(ro: duckdb.DuckDBPyConnection, root: Path) -> None:
    """DuckDB must be allowed to read the snapshot files, so it would let a COPY without a temp
    file overwrite one: the statement check (DuckDB's parser) is the layer that stops it."""
    snap_file = next(root.glob("tenant=globex/snapshot=*/memories.parquet"))
    before = snap_file.read_bytes()
    for sql in (
        f"COPY (SELECT 1 AS a) TO '{snap_file}' (FORMAT parquet, USE_TMP_FILE false)",
        f"EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{snap_file}' (FORMAT parquet, USE_TMP_FILE false)",
        f"/* comment */ EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{snap_file}' (USE_TMP_FILE false)",
    ):
        with pytest.raises(BadInput, match="read-only"):
            warehouse.run_query(ro, sql)
    assert snap_file.read_bytes() == before


def test_cli_table_aligns_wide_characters(root: Path) -> None:
    from longmem_etl.cli.sql import width

    proc = run_cli(
        "sql", "SELECT name, position FROM collections WHERE tenant = 'globex'", "--root", str(root)
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "|" in line]
    assert any("研究 📚" in line for line in rows)
    assert len({width(line.split("|")[0]) for line in rows}) == 1

"""Ctrl-C on real processes (`sql`, `clean` stop a long DuckDB query, exit 130, nothing left half
written), and the `sql` session's manners: PIVOT works, a user's --database keeps its own objects."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
from cli_support import run_cli as _cli
from cli_support import start_cli

from longmem_etl.snapshots.convert import convert_dump

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "longmem_etl" / "sample_data" / "acme-small.json"
# minutes of work for DuckDB, on any machine
SLOW = "(SELECT count(*) FROM range(100000000) a, range(1000) b WHERE (a.range * b.range) % 7 = 3)"


def _interrupt(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Start the CLI, let it get into its query, send SIGINT, return (exit code, stdout, stderr)."""
    proc = start_cli(
        *args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test runner started in the background inherits SIGINT ignored; a user's shell does not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(4)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=20)  # generous: it used to take over 60 s
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("still running 20 s after SIGINT")
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("root")
    convert_dump(SAMPLE, r, progress=False)
    return r


def test_sql_ctrl_c_stops_a_long_query(root: Path, tmp_path: Path) -> None:
    code, out, err = _interrupt(["sql", f"SELECT {SLOW} AS n", "--root", str(root)], tmp_path)
    assert code == 130, err
    assert err.strip().splitlines() == ["longmem-etl sql: interrupted"]
    assert out == ""


def test_clean_ctrl_c_leaves_nothing(root: Path, tmp_path: Path) -> None:
    snap = next(root.glob("tenant=*/snapshot=*"))
    spec = tmp_path / "slow.toml"
    spec.write_text(
        f"[[steps]]\nkind = \"sql\"\nquery = '''SELECT * FROM input WHERE {SLOW} >= 0'''\n"
    )
    out_root = tmp_path / "out"
    code, _, err = _interrupt(
        ["clean", str(snap), "--spec", str(spec), "--root", str(out_root)], tmp_path
    )
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "longmem-etl clean: interrupted"
    leftovers = list(out_root.rglob("*")) if out_root.exists() else []
    assert not [p for p in leftovers if p.is_file()], leftovers
    assert not list(tmp_path.glob(".tmp*"))


def test_pivot_works_and_stays_read_only(root: Path, tmp_path: Path) -> None:
    proc = _cli(
        "sql", "PIVOT latest_memories ON pinned USING count(*) GROUP BY tenant", "--root", str(root),
        "--format", "csv", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.strip().splitlines()
    assert header.split(",")[0] == "tenant" and len(header.split(",")) >= 2
    assert sum(int(x) for x in row.split(",")[1:] if x) == 50
    for bad in (
        f"PIVOT memories ON pinned USING count(*); COPY memories TO '{tmp_path}/x.csv'",
        f"COPY (PIVOT memories ON pinned USING count(*)) TO '{tmp_path}/x.csv'",
    ):
        proc = _cli("sql", bad, "--root", str(root), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert not (tmp_path / "x.csv").exists()


def test_database_keeps_users_objects(root: Path, tmp_path: Path) -> None:
    db = tmp_path / "user.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE snapshots AS SELECT 42 AS answer")
        con.execute("CREATE VIEW memories AS SELECT 'mine' AS who")
    for _ in range(2):  # created, then refreshed
        proc = _cli(
            "sql", "SELECT (SELECT count(*) FROM memories) AS n, (SELECT answer FROM main.snapshots) AS a",
            "--root", str(root), "--database", str(db), "--format", "csv", cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[1] == "50,42"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT answer FROM main.snapshots").fetchall() == [(42,)]
        assert con.execute("SELECT who FROM main.memories").fetchall() == [("mine",)]
        assert con.execute("SELECT count(*) FROM longmem.memories").fetchall() == [(50,)]
    # a `longmem` schema holding the user's own objects is refused, not overwritten
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE SCHEMA longmem")
        con.execute("CREATE TABLE longmem.memories AS SELECT 1 AS x")
    proc = _cli("sql", "SELECT 1", "--root", str(root), "--database", str(other), cwd=tmp_path)
    assert proc.returncode == 2
    assert "schema 'longmem' holds 'memories'" in proc.stderr
    with duckdb.connect(str(other), read_only=True) as con:
        assert con.execute("SELECT x FROM longmem.memories").fetchall() == [(1,)]


def test_interruptible_restores_the_wakeup_fd_and_is_inert_off_main_thread() -> None:
    """The handler plumbing is put back as it was (asyncio and others own the wakeup fd), and in a
    worker thread (Dagster) nothing is installed at all."""
    import socket
    import threading

    from longmem_etl.interrupts import interruptible

    a, b = socket.socketpair()
    b.setblocking(False)
    old = signal.set_wakeup_fd(b.fileno())
    try:
        with duckdb.connect() as con:
            with interruptible(con):
                ours = signal.set_wakeup_fd(-1)
                signal.set_wakeup_fd(ours)
                assert ours not in (-1, b.fileno())  # its own while inside
            assert signal.set_wakeup_fd(b.fileno()) == b.fileno()  # the previous one is back
            seen: list[int] = []

            def worker() -> None:
                with interruptible(con):
                    seen.append(con.execute("SELECT 1").fetchall()[0][0])

            t = threading.Thread(target=worker)
            t.start()
            t.join()
            assert seen == [1]
            assert signal.set_wakeup_fd(b.fileno()) == b.fileno()
    finally:
        signal.set_wakeup_fd(old)
        a.close()
        b.close()

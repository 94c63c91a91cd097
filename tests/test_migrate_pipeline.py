"""Freeze, plan and upload overlapped (`migrate.pipeline`): the first calls go out while the dump
is still being converted, with the same guarantees.

- the plan order is the frozen snapshot's row order; each collection fills its own chunk, so
  interleaved collections never make small chunks (and `--dry-run` counts the same chunks);
- convert hands every accepted row over once, in snapshot order, even when a guessed split is
  abandoned and the file read again;
- SIGKILL while the freeze is still streaming and chunks are in flight: nothing was sent before
  its plan row was durable, and the re-run is exact without a duplicate;
- SIGKILL at several points of the start (imports, binding, freeze): each re-run picks up, and
  the last one is exact;
- a dump found broken after the upload started: exit 2 on one line, and the re-run with the
  repaired dump sends only what is missing;
- Ctrl-C while the freeze streams: exit 130, and the resume is exact;
- rows kept back while the target's markers are read slowly are bounded;
- the migrate process never imports pandas (pyarrow's first array did), and to_pandas still works.
"""

from __future__ import annotations

import gzip
import json
import math
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from cli_support import cli_env, run_cli, start_cli

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.dumps import read
from longmem_etl.migrate import MigrationOptions, run_migration
from longmem_etl.migrate.plan import Chunker
from longmem_etl.snapshots import convert, parallel
from longmem_etl.snapshots.convert import convert_dump


def _mems(n: int, *, colls: tuple[str, ...] = ("a", "b", "c")) -> list[dict]:
    return [
        {
            "id": f"m{i:05d}",
            "collection": colls[i % len(colls)],
            "text": f"fact {i}",
            "metadata": {"i": i},
        }
        for i in range(n)
    ]


def _landed(db: Path) -> Counter:
    memories = open_endpoint(f"local:{db}", create=False).export_account()["memories"]
    return Counter(m["metadata"]["_longmem_etl"]["source_id"] for m in memories)


def test_interleaved_collections_fill_their_own_chunks() -> None:
    chunker = Chunker(chunk_size=10, max_bytes=1 << 20)
    counts = Counter()
    got: dict[int, list[str]] = {}
    for i in range(95):
        coll = "abc"[i % 3] if i % 7 else "d"
        counts[coll] += 1
        got.setdefault(chunker.add(coll, 10), []).append(coll)
    closed = chunker.finish()
    assert len(closed) == sum(math.ceil(n / 10) for n in counts.values())  # no small chunks
    assert sorted(c for c, *_ in closed) == list(range(len(closed)))  # numbered as they open
    for chunk_no, coll, n, nbytes in closed:
        assert set(got[chunk_no]) == {coll} and n == len(got[chunk_no]) and nbytes == 10 * n


def test_dry_run_counts_the_chunks_the_run_sends(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": _mems(250)}))
    opts = dict(source=str(tmp_path / "d.json"), target=f"local:{tmp_path / 't.db'}")
    dry = run_migration(MigrationOptions(**opts, chunk_size=20, dry_run=True, show_progress=False))
    real = run_migration(
        MigrationOptions(
            **opts, chunk_size=20, journal=str(tmp_path / "w" / "j.sqlite"), show_progress=False
        )
    )
    assert real.exit_code == 0
    assert dry.plan["chunks"] == real.counts["chunks_total"] == 3 * math.ceil(84 / 20)
    assert real.upload["calls"] == real.counts["chunks_total"]


def test_convert_hands_each_row_over_once_across_a_redone_guess(tmp_path, monkeypatch) -> None:
    # a guessed boundary lands inside a memory: the attempt is abandoned and redone; the rows the
    # first attempt already handed over are not handed over again
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(convert, "SPAN_BYTES", 200)
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    path = tmp_path / "nested.json"
    rows = [
        {"id": f"n{i:03d}", "text": f"t{i}", "metadata": {"refs": [{"id": f"r{i}"}, {"id": "s"}]}}
        for i in range(60)
    ]
    doc = {"format_version": 1, "tenant": "par", "collections": ["a"], "memories": rows}
    path.write_text(json.dumps(doc, separators=(",", ":")))
    guessed = read.guess_json_spans(str(path), 200)
    assert guessed is not None  # (the same layout test_convert_parallel proves is redone)
    attempts = []
    real_start = convert.start_workers
    monkeypatch.setattr(convert, "start_workers", lambda *a: attempts.append(1) or real_start(*a))
    given: list[str] = []
    res = convert_dump(
        path,
        tmp_path / "root",
        progress=False,
        batch_size=7,
        on_rows=lambda b: given.extend(b.column("id").to_pylist()),
    )
    assert len(attempts) == 2  # really redone
    frozen = pq.read_table(res.path / "memories.parquet").column("id").to_pylist()
    assert given == frozen == [r["id"] for r in rows]


def _journal_state(journal: Path) -> tuple[int, bool, bool]:
    """(items done, plan finished, freeze finished) as another process sees them."""
    try:
        con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            done = con.execute("SELECT count(*) FROM items WHERE state = 'done'").fetchone()[0]
            keys = {r[0] for r in con.execute("SELECT k FROM migration")}
            return done, "planned" in keys, "frozen_snapshot" in keys
        finally:
            con.close()
    except sqlite3.Error:
        return 0, False, False


MID_FREEZE_N = 12_000


def _signal_mid_freeze(
    tmp_path: Path, sig: signal.Signals, **popen: Any
) -> tuple[subprocess.Popen, list[str], dict[str, str], Path, Path]:
    """Start a migration of a 12k dump and send ``sig`` once items have landed while the freeze is
    still streaming. Returns (process, the migrate args, env, target db, journal)."""
    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": _mems(MID_FREEZE_N)}))
    db = tmp_path / "t.db"
    journal = tmp_path / "w" / "journal.sqlite"
    args = [
        "migrate", "--source", "d.json", "--target", f"local:{db}?latency_ms=10",
        "--journal", str(journal), "--chunk-size", "20", "--concurrency", "4",
    ]  # fmt: skip
    env = {"LONGMEM_ETL_HOME": str(tmp_path / "h")}
    proc = start_cli(*args, cwd=tmp_path, env=env, stderr=subprocess.PIPE, **popen)
    caught = False
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        done, _planned, frozen = _journal_state(journal)
        if done >= 20 and not frozen:
            proc.send_signal(sig)
            caught = True
            break
        time.sleep(0.002)
    assert caught, "no item landed before the freeze ended: the upload did not overlap it"
    return proc, args, env, db, journal


def test_killed_while_the_freeze_streams_with_chunks_in_flight_rerun_is_exact(
    tmp_path: Path,
) -> None:
    n = MID_FREEZE_N
    proc, args, env, db, journal = _signal_mid_freeze(tmp_path, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(journal) as con:
        rows = {r[0] for r in con.execute("SELECT source_id FROM items")}
        keys = {r[0] for r in con.execute("SELECT k FROM migration")}
    assert "planned" not in keys and "frozen_snapshot" not in keys  # killed mid-freeze
    sent = _landed(db)
    assert sent and set(sent) <= rows  # nothing was sent before its plan row was durable
    assert max(sent.values()) == 1 and len(rows) < n
    status = run_cli("status", str(journal), cwd=tmp_path, env=env)
    assert status.returncode == 0 and "plan not finished" in status.stdout, status.stdout
    final = run_cli(*args, "--json", cwd=tmp_path, env=env, timeout=300)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["verification"]["exact"] is True
    assert out["holdings"]["already_in_target"] >= len(sent)
    landed = _landed(db)
    assert len(landed) == n and max(landed.values()) == 1


def test_ctrl_c_while_the_freeze_streams_exits_130_and_the_resume_is_exact(
    tmp_path: Path,
) -> None:
    n = MID_FREEZE_N
    proc, args, env, db, _journal = _signal_mid_freeze(
        tmp_path, signal.SIGINT, stdout=subprocess.PIPE, text=True
    )
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with:" in err and "Traceback" not in err
    assert not list((tmp_path / "w" / "frozen").rglob("manifest.json"))  # freeze abandoned
    sent = _landed(db)
    assert max(sent.values()) == 1
    final = run_cli(*args, "--json", cwd=tmp_path, env=env, timeout=300)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["verification"]["exact"] is True
    landed = _landed(db)
    assert len(landed) == n and max(landed.values()) == 1


def test_killed_at_points_of_the_start_each_rerun_picks_up_and_ends_exact(
    tmp_path: Path,
) -> None:
    n = 3000
    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": _mems(n)}))
    db = tmp_path / "t.db"
    args = [
        "migrate", "--source", "d.json", "--target", f"local:{db}?latency_ms=20",
        "--chunk-size", "10", "--concurrency", "4",
    ]  # fmt: skip
    env = {"LONGMEM_ETL_HOME": str(tmp_path / "h")}
    for delay in (0.05, 0.2, 0.4, 0.7, 1.0):  # interpreter, imports, binding, freeze, first calls
        proc = start_cli(*args, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if db.exists():
            assert max(_landed(db).values(), default=1) == 1  # never a duplicate
    final = run_cli(*args, "--json", cwd=tmp_path, env=env, timeout=300)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["verification"]["exact"] is True
    landed = _landed(db)
    assert len(landed) == n and max(landed.values()) == 1


def test_dump_broken_after_the_upload_started_exit_2_then_repaired_rerun_is_exact(
    tmp_path: Path,
) -> None:
    # JSONL streams in 8 MiB blocks: a gzip stream cut short is found only once the first
    # blocks' rows were planned and sent
    n = 3000
    mems = [{**m, "text": f"{i} " + "x" * 4000} for i, m in enumerate(_mems(n))]
    lines = [json.dumps({"format_version": 1, "tenant": "t"}), *map(json.dumps, mems)]
    body = gzip.compress(("\n".join(lines) + "\n").encode())
    (tmp_path / "d.jsonl.gz").write_bytes(body[: len(body) * 9 // 10])  # truncated stream
    db = tmp_path / "t.db"
    args = [
        "migrate", "--source", "d.jsonl.gz", "--target", f"local:{db}?latency_ms=1",
        "--chunk-size", "10", "--concurrency", "4",
    ]  # fmt: skip
    env = {"LONGMEM_ETL_HOME": str(tmp_path / "h")}
    broken = run_cli(*args, cwd=tmp_path, env=env, timeout=300)
    assert broken.returncode == 2, broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1 and "Traceback" not in broken.stderr
    assert "d.jsonl.gz" in broken.stderr and "the upload had started" in broken.stderr
    sent = _landed(db) if db.exists() else Counter()
    assert max(sent.values(), default=1) == 1
    (tmp_path / "d.jsonl.gz").write_bytes(body)  # repaired
    final = run_cli(*args, "--json", cwd=tmp_path, env=env, timeout=300)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["verification"]["exact"] is True
    assert out["holdings"]["already_in_target"] == sum(sent.values())
    landed = _landed(db)
    assert len(landed) == n and max(landed.values()) == 1


def test_rows_kept_back_for_a_slow_holdings_read_are_bounded(tmp_path: Path, monkeypatch) -> None:
    # the target's markers are read slowly (an existing store, 1.5 s a call): the planner keeps
    # rows back only up to MAX_WAITING, then waits for the read (and so does the freeze)
    import threading

    from longmem_etl.migrate import planstream
    from longmem_etl.migrate.engine import HoldingsRead
    from longmem_etl.migrate.journal import Journal

    db = tmp_path / "t.db"
    open_endpoint(f"local:{db}")
    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": _mems(15)}))
    snap = convert_dump(tmp_path / "d.json", tmp_path / "root", progress=False)
    rows = pq.read_table(snap.path / "memories.parquet")
    monkeypatch.setattr(planstream, "MAX_WAITING", 10)
    opts = MigrationOptions(source=str(tmp_path / "d.json"), target=f"local:{db}?latency_ms=1500")
    reading = HoldingsRead(opts, "K", threading.Event())
    journal = Journal(tmp_path / "j.sqlite")
    journal.bind({"source": {}, "target": {}, "mode": {}})
    planner = planstream.BatchPlanner(
        journal, mode="add", source_key="K", chunk_size=5, max_bytes=1 << 20, held=reading
    )
    planner.add(rows.slice(0, 5))
    planner.add(rows.slice(5, 5))
    assert journal.counts()["items_total"] == 0 and not reading.ready()  # kept back
    planner.add(rows.slice(10, 5))  # past the bound: waits for the read, then writes all
    assert reading.ready() and journal.counts()["items_total"] == 15
    planner.finish()
    assert journal.planned and journal.counts()["chunks_total"] == 3


def test_the_migrate_process_never_imports_pandas_yet_to_pandas_still_works(
    tmp_path: Path,
) -> None:
    # pyarrow's first pa.array(list) imported pandas (0.25-0.5 s) only to ask whether the list
    # was a pandas object; `migrate` tells it there is none, on the way to its first call
    import sys

    (tmp_path / "d.json").write_text(json.dumps({"tenant": "t", "memories": _mems(30)}))
    code = (
        "import sys; from longmem_etl.cli.main import main; "
        "rc = main(['migrate', '--source', 'd.json', '--target', 'local:t.db']); "
        "assert rc == 0, rc; print('pandas' in sys.modules); "
        "import pyarrow as pa; print(type(pa.table({'a': [1]}).to_pandas()).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=cli_env({"LONGMEM_ETL_HOME": str(tmp_path / "h")}),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["False", "DataFrame"]


def test_duckdb_is_imported_early_only_once_the_first_round_of_calls_is_out() -> None:
    """The freeze's DuckDB import is moved to where no call can be waiting for the GIL: after a
    full round of calls went out, not before (it would hold back the first calls)."""
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys, time, types
        from longmem_etl.migrate import pipeline
        pipeline._FIRST_ROUND_WAIT = 60.0  # only the calls may release it, however slow this is
        up = types.SimpleNamespace(stats=types.SimpleNamespace(calls=0), concurrency=2)
        warm = pipeline._import_duckdb_now(up)
        time.sleep(0.05)
        before = "duckdb" in sys.modules
        up.stats.calls = 2
        warm.join()
        print(before, "duckdb" in sys.modules, warm.daemon,
              pipeline._import_duckdb_now(up) is None)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True", "False", "True"]

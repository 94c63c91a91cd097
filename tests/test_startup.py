"""The `migrate` command's start and exit (issue 15's fixed costs), with real processes where the
property is a process's: what is imported before the first call, the parser built for one verb,
progress without a terminal, the freeze's first batches and its one scan of the dump, the plan
binding still journaled (and a kill -9 right after the first call resumed exactly), and the lean
exit leaving the exit code, the outputs and closed SQLite files as before."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_support import cli_env, run_cli

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.cli.main import _verb_names, build_parser, main
from longmem_etl.dumps.read import open_dump
from longmem_etl.migrate import source as sources
from longmem_etl.progress import Quiet, progress

CHILD = Path(__file__).resolve().parent / "startup_child.py"


def _dump(path: Path, n: int) -> list[dict]:
    mems = [
        {
            "id": f"m-{i:05d}",
            "collection": ["notes", "crm"][i % 2],
            "text": f"memory {i}",
            "metadata": {"n": i},
        }
        for i in range(n)
    ]
    path.write_text(json.dumps({"tenant": "acme", "memories": mems}))
    return mems


def _child(out: Path, *args: str | Path, cwd: Path) -> subprocess.Popen:
    """``longmem-etl ARGS`` through `startup_child.py` (stamps the first call into ``out``)."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(out), *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _journal_meta(journal: Path, key: str) -> object:
    con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT v FROM migration WHERE k = ?", (key,)).fetchone()
    finally:
        con.close()
    return json.loads(row[0]) if row else None


def test_migrate_to_a_new_local_target_imports_no_duckdb_tqdm_or_other_verbs_before_the_first_call(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "d.json"
    _dump(dump, 12_000)  # the freeze (whose commit hashes rows with DuckDB) outlasts 1st call
    out = tmp_path / "stamps.json"
    proc = _child(
        out, "migrate", "--source", dump, "--target", f"local:{tmp_path / 'new.db'}", cwd=tmp_path
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    stamps = json.loads(out.read_text())
    modules = set(stamps["modules"])
    assert "longmem_etl.migrate.uploader" in modules  # the probe saw the real first call
    # the command froze its imports' objects before the run (`cli.main.freeze_imports`)
    assert stamps["frozen"] > 10_000
    assert not {m for m in modules if m.split(".")[0] in ("duckdb", "tqdm", "pandas")}
    assert "longmem_etl.migrate.targetread" not in modules  # no target to read yet
    assert {m for m in modules if m.startswith("longmem_etl.cli.")} == {
        "longmem_etl.cli.main",
        "longmem_etl.cli.common",
        "longmem_etl.cli.migrate",
    }


def test_help_still_lists_every_verb_and_a_named_verb_builds_only_its_parser(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    names = _verb_names()
    assert len(names) >= 16
    for name in names:
        assert f"    {name} " in help_text or f"    {name}\n" in help_text, name
    full = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    one = build_parser(["migrate", "--source", "x"])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(full) == set(names)
    assert set(one) == {"migrate"}
    assert one["migrate"].format_help() == full["migrate"].format_help()
    assert set(build_parser(["no-such-verb"])._subparsers._group_actions[0].choices) == set(names)  # type: ignore[union-attr]


def test_a_typo_verb_is_still_a_usage_error_listing_the_verbs() -> None:
    proc = run_cli("migrat", "--source", "x")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr and "migrate" in proc.stderr


def test_progress_without_a_terminal_is_quiet_and_never_imports_tqdm() -> None:
    bar = progress(10, desc="x")
    assert isinstance(bar, Quiet)  # pytest's stderr is not a terminal
    with bar:
        bar.update(3)
    assert bar.n == 3 and bar.disable
    code = (
        "import sys; from longmem_etl.progress import progress\n"
        "b = progress(5, desc='x'); b.update(2); b.close()\n"
        "print(type(b).__name__, b.n, 'tqdm' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60
    )
    assert proc.stdout.split() == ["Quiet", "2", "False"], proc.stderr


def test_first_batches_are_small_then_full_and_rows_keep_their_order(tmp_path: Path) -> None:
    dump = tmp_path / "d.json"
    mems = _dump(dump, 6500)
    src = open_dump(dump, batch_size=2000, first_batch=1000)
    chunks = [(c.start, c.count) for c in src.chunks()]
    assert chunks == [(0, 1000), (1000, 2000), (3000, 2000), (5000, 1500)]
    plain = [c.count for c in open_dump(dump, batch_size=2000).chunks()]
    assert plain == [2000, 2000, 2000, 500]
    ids = [
        json.loads(bytes(r))["id"]
        for _, rows in open_dump(dump, first_batch=700).batches()
        for r in rows
    ]
    assert ids == [m["id"] for m in mems]


def test_the_freeze_reuses_the_dump_the_tenant_lookup_opened_once_and_only_if_unchanged(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "d.json"
    _dump(dump, 50)
    try:
        sources.stable_source_identity(str(dump), key_env="K")  # not kept unless asked
        assert sources.take_opened(dump) is None
        ident = sources.stable_source_identity(str(dump), key_env="K", keep_opened=True)
        assert ident == {"tenant": "acme"}
        assert sources.opened_total(str(dump)) == 50  # the progress total before the plan's
        opened = sources.take_opened(dump)
        assert opened is not None and opened.total == 50
        assert sources.take_opened(dump) is None  # once
        sources.stable_source_identity(str(dump), key_env="K", keep_opened=True)
        _dump(dump, 51)  # rewritten since: the freeze must read the new file
        assert sources.take_opened(dump) is None
        sha, size = sources.dump_digest(dump)
        assert sha == hashlib.sha256(dump.read_bytes()).hexdigest() and size == dump.stat().st_size
    finally:
        sources.forget_opened()


def test_the_frozen_manifest_and_the_journal_still_get_the_dumps_sha256(tmp_path: Path) -> None:
    """The freeze no longer waits for the hash before its first row (a fresh work dir has no
    snapshot that could hold the content); the manifest and the plan binding still carry it."""
    from longmem_etl.snapshots import convert_dump
    from longmem_etl.snapshots.manifest import read_manifest

    dump = tmp_path / "d.json"
    _dump(dump, 120)
    sha = hashlib.sha256(dump.read_bytes()).hexdigest()
    first = convert_dump(dump, tmp_path / "root", progress=False, parallel=False)
    assert read_manifest(first.path)["source"]["sha256"] == sha
    again = convert_dump(dump, tmp_path / "root", progress=False, parallel=False)
    assert again.already_present and again.path == first.path  # checked before any row then
    proc = run_cli("migrate", "--source", dump, "--target", f"local:{tmp_path / 't.db'}", "--json")
    assert proc.returncode == 0, proc.stderr
    journal = Path(json.loads(proc.stdout)["journal"])
    assert _journal_meta(journal, "plan_binding")["content"]["sha256"] == sha  # type: ignore[index]
    frozen = _journal_meta(journal, "frozen_snapshot")
    assert read_manifest(Path(str(frozen)))["source"]["sha256"] == sha


def test_kill_9_right_after_the_first_call_then_resume_is_exact(tmp_path: Path) -> None:
    dump = tmp_path / "d.json"
    mems = _dump(dump, 3000)
    db = tmp_path / "t.db"
    target = f"local:{db}?latency_ms=50"
    out = tmp_path / "stamps.json"
    args = ["migrate", "--source", dump, "--target", target, "--concurrency", "2"]
    args += ["--chunk-size", "50", "--json"]
    proc = _child(out, *args, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert out.exists(), proc.communicate()[1]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["verification"]["exact"]
    held = open_endpoint(f"local:{db}", create=False).export_account()["memories"]
    by_sid = Counter(m["metadata"]["_longmem_etl"]["source_id"] for m in held)
    assert sorted(by_sid) == sorted(m["id"] for m in mems) and max(by_sid.values()) == 1


def test_the_lean_exit_keeps_exit_codes_outputs_and_closes_the_sqlite_files(
    tmp_path: Path,
) -> None:
    dump = tmp_path / "d.json"
    _dump(dump, 400)
    db = tmp_path / "t.db"
    proc = run_cli("migrate", "--source", dump, "--target", f"local:{db}", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # stdout flushed whole at exit
    assert result["exit_code"] == 0 and result["verification"]["exact"]
    for path in result["outputs"].values():
        assert Path(path).is_file()
    journal = Path(result["journal"])
    # closed normally: the last connection of a WAL database checkpoints it and removes the log
    leftovers = [p.name for p in (journal.parent, db.parent) for p in p.iterdir()]
    assert not [n for n in leftovers if n.endswith(("-wal", "-shm"))], leftovers
    bad = run_cli("migrate", "--source", tmp_path / "missing.json", "--target", f"local:{db}")
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_a_call_from_python_freezes_nothing(tmp_path: Path, capsys) -> None:
    dump = tmp_path / "d.json"
    _dump(dump, 20)
    frozen = gc.get_freeze_count()
    code = main(["migrate", "--source", str(dump), "--target", f"local:{tmp_path / 't.db'}"])
    assert code == 0, capsys.readouterr().err
    assert gc.get_freeze_count() == frozen

"""An embedded (``local:``) store or a journal that hits the disk's limit mid-run: one line naming
the file, what happened and what to do, exit 2, nothing half-written, and the same command
completes once the limit is gone (docs/guarantees.md). The limit is a real ``RLIMIT_FSIZE`` in the
child (a write past it fails with EFBIG, which SQLite reports only as "disk I/O error")."""

from __future__ import annotations

import json
import resource
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

from cli_support import SAMPLES, run_cli, start_cli, stored_memories

from longmem_etl.api.local import LocalStore


def _run_limited(args: list, limit: int) -> subprocess.CompletedProcess[str]:
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = start_cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     preexec_fn=pre)  # fmt: skip
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    (line,) = r.stderr.strip().splitlines()
    assert "Traceback" not in line and "internal error" not in line, line
    return line


def _marked_once(memories: list[dict], n: int) -> None:
    marks = Counter(
        m["metadata"]["_longmem_etl"]["source_id"]
        for m in memories
        if isinstance(m.get("metadata"), dict) and "_longmem_etl" in m["metadata"]
    )
    assert len(marks) == n and max(marks.values()) == 1


def test_seeding_a_store_past_the_file_size_limit_is_one_line_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    db = tmp_path / "acct.db"
    args = ["local", "seed", f"local:{db}", "--from", SAMPLES / "globex-dirty.json"]
    line = _one_line(_run_limited(args, 100_000))
    assert f"local:{db}: cannot write the store" in line and "file size limit" in line, line
    assert "raise the limit" in line and "disk I/O error" not in line, line
    assert not list(tmp_path.glob("acct.db*"))  # a new store that could not be written is gone
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert len(stored_memories(db)) == 1000


def test_a_target_store_at_its_limit_stops_the_migration_in_one_line_and_the_rerun_is_exact(
    tmp_path: Path,
) -> None:
    """The target's write-ahead log is already near the limit (a reader of another process pins
    it, so it cannot start over): the first write to the target fails, the journal (far smaller)
    does not. The run stops at once (no dead letters, no retries of a full disk)."""
    db = tmp_path / "target.db"
    store = LocalStore(db)
    store.seed_dump(json.loads((SAMPLES / "globex-dirty.json").read_text()))
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM memories").fetchone()
        limit = Path(f"{db}-wal").stat().st_size + 20_000
        args = ["migrate", "--source", SAMPLES / "acme-small.json", "--target", f"local:{db}"]
        line = _one_line(_run_limited(args, limit))
    finally:
        reader.close()
        store.close()
    assert f"local:{db}: cannot write the store" in line and "file size limit" in line, line
    assert "resume with: " in line and "journal.sqlite" not in line.split("resume with")[0], line
    before = stored_memories(db)
    assert len(before) >= 1000  # the seeded account untouched; whole chunks only
    again = run_cli(*args, "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["verification"]["exact"] is True and result["dead_letters"] == 0
    after = stored_memories(db)
    assert len(after) == 1050
    _marked_once(after, 50)


def test_a_journal_filling_up_mid_upload_is_one_line_exit_2_and_the_rerun_is_exact(
    tmp_path: Path,
) -> None:
    """The journal's disk limit is reached while chunks are landing (the plan fitted): before,
    the uploader's thread turned it into an exit 1 reading ``journal write failed: BadInput``."""
    root = tmp_path / "snaps"
    assert run_cli("convert", SAMPLES / "globex-dirty.json", "--root", root).returncode == 0
    (snap,) = root.glob("tenant=*/snapshot=*")
    db = tmp_path / "dst.db"
    args = ["migrate", "--source", snap, "--target", f"local:{db}", "--chunk-size", "20",
            "--concurrency", "1"]  # fmt: skip
    line = _one_line(_run_limited(args, 1_300_000))
    assert "journal.sqlite: cannot write the journal: no space left" in line, line
    assert "resume with: longmem-etl migrate" in line and "BadInput" not in line, line
    landed = len(stored_memories(db))
    assert 0 < landed < 1000  # it failed mid-upload, as this test means
    again = run_cli(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["verification"]["exact"] is True
    after = stored_memories(db)
    assert len(after) == 1000
    _marked_once(after, 1000)

"""The retry budget (`--max-attempts`, `--give-up-after`), the heartbeat progress line without a
terminal, and same-account detection by device and inode. Real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_support import run_cli

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.cli.migrate import parse_duration

HEARTBEAT = re.compile(r"^migrate: \d+/60 \(\d+%\) items, [\d.]+ item/s, \d+s elapsed$", re.M)


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The CLI from ``cwd``, keeping its migrations in ``cwd/home`` (the tests read them there)."""
    return run_cli(*args, cwd=cwd, env={"LONGMEM_ETL_HOME": str(cwd / "home"), **env})


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    mems = [{"id": f"m{i:02d}", "collection": "c", "text": f"memory {i}"} for i in range(60)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"tenant": "t", "memories": mems}))
    return path


def _dead(cwd: Path) -> list[dict]:
    [path] = (cwd / "home" / "migrations").glob("*/dead_letter.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_target_that_always_fails_ends_with_exit_3_dead_letters_and_heartbeats(
    tmp_path: Path, dump: Path
) -> None:
    target = "local:./t.db?write_fail_rate=1.0&latency_ms=40"  # reads answer, writes fail
    out = cli(
        [
            "migrate",
            "--source",
            str(dump),
            "--target",
            target,
            "--max-attempts",
            "3",
            "--chunk-size",
            "20",
        ],  # fmt: skip
        tmp_path,
        LONGMEM_ETL_PROGRESS_SECONDS="0.1",
    )
    assert out.returncode == 3, out.stderr
    dead = _dead(tmp_path)
    assert sorted(d["source_id"] for d in dead) == [f"m{i:02d}" for i in range(60)]
    assert all(d["status"] == 503 for d in dead)
    assert all("gave up after 3 attempts" in d["message"] for d in dead)
    assert "verification: EXACT" not in out.stdout
    assert "60 item(s) dead-lettered" in out.stdout
    assert HEARTBEAT.search(out.stderr), out.stderr  # a pipe still hears from the run
    # the dead letters replay once the target is back
    replay = cli(
        [
            "migrate",
            "--source",
            str(next((tmp_path / "home").rglob("dead_letter.jsonl"))),
            "--target",
            "local:./t.db",
        ],  # fmt: skip
        tmp_path,
    )
    assert replay.returncode == 0, replay.stderr


def test_a_target_that_fails_every_call_ends_with_exit_3_and_nothing_sent(
    tmp_path: Path, dump: Path
) -> None:
    # an existing store (one that does not exist yet holds nothing: no read is needed)
    open_endpoint(f"local:{tmp_path / 't.db'}")
    out = cli(
        [
            "migrate",
            "--source",
            str(dump),
            "--target",
            "local:./t.db?fail_rate=1.0",
            "--max-attempts",
            "3",
        ],  # fmt: skip
        tmp_path,
    )
    assert out.returncode == 3, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert "cannot read the target to learn what it already holds" in line
    assert "nothing was sent — resume with: longmem-etl migrate" in line
    [work] = (tmp_path / "home" / "migrations").iterdir()
    assert (work / "dead_letter.jsonl").read_text() == ""
    # the target back: the printed resume command finishes the job exactly
    again = cli(["migrate", "--source", str(dump), "--target", "local:./t.db"], tmp_path)
    assert again.returncode == 0, again.stderr


def test_give_up_after_bounds_the_time_of_a_failing_call(tmp_path: Path, dump: Path) -> None:
    out = cli(
        [
            "migrate",
            "--source",
            str(dump),
            "--target",
            "local:./t.db?write_fail_rate=1.0",
            "--max-attempts",
            "1000",
            "--give-up-after",
            "300ms",
            "--json",
        ],  # fmt: skip
        tmp_path,
    )
    assert out.returncode == 3, out.stderr
    res = json.loads(out.stdout)
    assert res["dead_letters"] == 60 and res["verification"]["exact"] is False
    assert all("retry budget spent" in d["message"] for d in _dead(tmp_path))
    assert out.stderr == ""  # --json + no heartbeat within the default 5 s: stdout/stderr clean


def test_flaky_target_within_budget_is_exact(tmp_path: Path, dump: Path) -> None:
    out = cli(
        [
            "migrate",
            "--source",
            str(dump),
            "--target",
            "local:./t.db?fail_rate=0.3&seed=5",
            "--chunk-size",
            "10",
        ],  # fmt: skip
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "EXACT" in out.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-attempts", "0"], "--max-attempts 0: must be between 1 and 1000"),
        (["--give-up-after", "soon"], "is not a duration"),
        (["--give-up-after=0s"], "must be a positive duration"),
    ],
)
def test_bad_budget_flags_exit_2(tmp_path: Path, dump: Path, flags, message) -> None:
    out = cli(["migrate", "--source", str(dump), "--target", "local:./t.db", *flags], tmp_path)
    assert out.returncode == 2 and message in out.stderr
    assert not (tmp_path / "t.db").exists()


def test_parse_duration() -> None:
    assert parse_duration("90") == 90.0 and parse_duration("1.5m") == 90.0
    assert parse_duration("2h") == 7200.0 and parse_duration("250ms") == 0.25


@pytest.mark.parametrize("how", ["hardlink", "symlink", "spelling"])
def test_same_store_under_another_name_is_the_same_account(
    tmp_path: Path, dump: Path, how: str
) -> None:
    seed = cli(["local", "seed", "local:./a.db", "--from", str(dump)], tmp_path)
    assert seed.returncode == 0, seed.stderr
    (tmp_path / "sub").mkdir()
    if how == "hardlink":
        os.link(tmp_path / "a.db", tmp_path / "sub" / "b.db")
        target = "local:./sub/b.db"
    elif how == "symlink":
        (tmp_path / "sub" / "b.db").symlink_to(tmp_path / "a.db")
        target = "local:./sub/b.db"
    else:
        target = "local:./sub/../a.db?latency_ms=1"
    out = cli(["migrate", "--source", "local:./a.db", "--target", target], tmp_path)
    assert out.returncode == 2
    assert "--source and --target are the same account" in out.stderr
    assert not (tmp_path / "home" / "migrations").exists()


def test_a_copy_is_another_account(tmp_path: Path, dump: Path) -> None:
    assert cli(["local", "seed", "local:./a.db", "--from", str(dump)], tmp_path).returncode == 0
    shutil.copy(tmp_path / "a.db", tmp_path / "copy.db")
    out = cli(
        ["migrate", "--source", "local:./a.db", "--target", "local:./copy.db", "--dry-run"],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr

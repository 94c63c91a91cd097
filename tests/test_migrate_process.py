"""Proof, with real processes: SIGKILL a migration at random moments while the target injects
faults, resume to the end, and check the target independently of `verify`: every source memory
is there exactly once. Plus Ctrl-C, dry run, a journal bound to another target, and bisection."""

from __future__ import annotations

import json
import random
import shlex
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_support import journal_planned, run_cli, start_cli

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.migrate import MigrationOptions, run_migration


def _dump(path: Path, n: int, *, blank: int | None = None) -> list[dict]:
    rng = random.Random(n)
    mems = []
    for i in range(n):
        mems.append(
            {
                "id": f"mem-{i:05d}",
                "collection": ["notes", "crm", "support"][i % 3],
                "text": f"fact {i}: {rng.choice(['alpha', 'beta', 'gamma'])} {rng.random():.6f}",
                "importance": round(rng.random(), 3),
                "category": "fact",
                "metadata": {"n": i, "src": "test"},
                "source": "sdk",
                "container_tag": None if i % 4 == 0 else f"user-{i % 7}",
                "pinned": i % 11 == 0,
                "archived": False,
                "created_at": f"2025-0{1 + i % 9}-1{i % 10}T10:00:00Z",
                "updated_at": f"2025-0{1 + i % 9}-1{i % 10}T10:00:00Z",
                "expires_at": None,
                "superseded_by": None,
            }
        )
    if blank is not None:
        mems[blank]["text"] = "   "
    path.write_text(
        json.dumps({"tenant": "acme", "collections": ["notes", "crm", "support"], "memories": mems})
    )
    return mems


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return start_cli(*args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done_items(journal: Path) -> int:
    if not journal.exists():
        return -1
    try:
        con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM items WHERE state = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def _target_contents(db: Path) -> list[dict]:
    """Independent of the migrate package: the store's own export, fault-free."""
    return open_endpoint(f"local:{db}", create=False).export_account()["memories"]


def _assert_exactly_once(source: list[dict], target: list[dict], mode: str) -> None:
    by_sid = Counter(m["metadata"]["_longmem_etl"]["source_id"] for m in target)
    assert len(target) == len(source), (len(target), len(source))
    assert sorted(by_sid) == sorted(m["id"] for m in source)  # 0 missing, 0 extra
    assert max(by_sid.values()) == 1  # 0 duplicated
    # the content made it, not just markers
    want = Counter((m["collection"], m["container_tag"], m["text"]) for m in source)
    got = Counter((m["collection"], m["container_tag"], m["text"]) for m in target)
    assert want == got
    if mode == "import":
        assert sum(m["pinned"] for m in target) == sum(m["pinned"] for m in source)


@pytest.mark.parametrize("mode", ["add", "import"])
def test_sigkill_at_random_moments_then_resume_is_exactly_once(tmp_path: Path, mode: str) -> None:
    # big enough, and the calls slow enough (<= ~1,300 items/s), that a run started on a fast,
    # idle machine cannot finish before its fifth kill (the first one may come 1.5 s in)
    source = _dump(tmp_path / "dump.json", 3000)
    db = tmp_path / "target.db"
    journal = tmp_path / "work" / "journal.sqlite"
    target = (
        f"local:{db}?latency_ms=30&fail_rate=0.1&ambiguous_rate=0.05&rate_limit_rps=250&seed=11"
    )
    args = [
        "migrate",
        "--source",
        "dump.json",
        "--target",
        target,
        "--mode",
        mode,
        "--journal",
        str(journal),
        "--chunk-size",
        "10",
        "--concurrency",
        "4",
    ]
    rng = random.Random(mode)
    kills = 0
    # first kill at a random moment from start (may land in startup, freeze or planning)
    proc = _start(args, tmp_path)
    time.sleep(rng.uniform(0.2, 1.5))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        kills += 1
    proc.wait()
    # then kills while chunks are being uploaded, at random points of progress
    while kills < 5:
        before = _done_items(journal)
        proc = _start(args, tmp_path)
        goal = before + rng.randint(15, 60)
        deadline = time.monotonic() + 60
        # ... of a finished plan (a kill before it ends leaves a plan the next run makes afresh)
        while (
            proc.poll() is None
            and (_done_items(journal) < goal or not journal_planned(journal))
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            break  # finished before we could kill it: the plan is too small for this machine
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 5
    assert _done_items(journal) < len(source)  # the kills really interrupted the upload
    final = run_cli(*args, "--json", cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["resumed"] is True and summary["verification"]["exact"] is True
    _assert_exactly_once(source, _target_contents(db), mode)


def test_sigterm_then_ctrl_c_print_resume_command_and_resuming_completes(tmp_path: Path) -> None:
    source = _dump(tmp_path / "dump.json", 400)
    db = tmp_path / "target.db"
    journal = tmp_path / "j" / "journal.sqlite"
    args = [
        "migrate",
        "--source",
        "dump.json",
        "--target",
        f"local:{db}?latency_ms=30&ambiguous_rate=0.05&seed=2",
        "--journal",
        str(journal),
        "--chunk-size",
        "10",
        "--concurrency",
        "2",
    ]
    resume = None
    for sig, goal in ((signal.SIGTERM, 40), (signal.SIGINT, 120)):
        proc = _start(args, tmp_path)
        while proc.poll() is None and _done_items(journal) < goal:
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        line = next(x for x in err.splitlines() if x.startswith("resume with: "))
        resume = shlex.split(line[len("resume with: ") :])
        assert resume[:2] == ["longmem-etl", "migrate"]
        # the interrupted run left a consistent journal with work still to do
        assert goal <= _done_items(journal) < len(source)
    status = run_cli("status", str(journal), "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["items_pending"] > 0
    done = run_cli(*resume[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _assert_exactly_once(source, _target_contents(db), "add")


def test_dry_run_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dump(tmp_path / "dump.json", 250)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_migration(
        MigrationOptions(source="dump.json", target="local:target.db", dry_run=True)
    )
    assert result.exit_code == 0
    plan = result.plan
    assert plan["items"] == 250 and plan["chunks"] == 3 and plan["bytes"] > 0
    assert set(plan["collections"]) == {"notes", "crm", "support"}
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == before
    )  # no journal, no work dir, no target


def test_journal_bound_to_another_target_refuses(tmp_path: Path) -> None:
    _dump(tmp_path / "dump.json", 30)
    j = str(tmp_path / "j" / "journal.sqlite")
    first = run_migration(
        MigrationOptions(
            source=str(tmp_path / "dump.json"),
            target=f"local:{tmp_path / 'a.db'}",
            journal=j,
            show_progress=False,
        )
    )
    assert first.exit_code == 0
    other = run_cli(
        "migrate", "--source", "dump.json", "--target", "local:b.db", "--journal", j, cwd=tmp_path
    )
    assert other.returncode == 2
    assert (
        "bound to another target" in other.stderr
        and "a.db" in other.stderr
        and "b.db" in other.stderr
    )
    assert len(other.stderr.strip().splitlines()) == 1 and not (tmp_path / "b.db").exists()


def test_one_invalid_item_is_dead_lettered_and_the_rest_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _dump(tmp_path / "dump.json", 200, blank=57)
    monkeypatch.chdir(tmp_path)
    result = run_migration(
        MigrationOptions(source="dump.json", target="local:t.db", show_progress=False)
    )
    assert result.exit_code == 3
    summary = result.as_dict()
    assert summary["dead_letters"] == 1 and summary["upload"]["bisections"] >= 1
    dead = [json.loads(x) for x in Path(summary["outputs"]["dead_letter"]).read_text().splitlines()]
    assert [(d["source_id"], d["status"]) for d in dead] == [("mem-00057", 422)]
    assert "text" in dead[0]["message"]
    landed = _target_contents(tmp_path / "t.db")
    assert sorted(m["metadata"]["_longmem_etl"]["source_id"] for m in landed) == sorted(
        m["id"] for m in source if m["id"] != "mem-00057"
    )
    ver = json.loads(Path(summary["outputs"]["verification"]).read_text())
    assert ver["totals"]["missing"] == 1 and ver["dead_lettered"] == 1


def test_fixed_dead_letters_replay_into_the_same_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _dump(tmp_path / "dump.json", 40, blank=7)
    monkeypatch.chdir(tmp_path)
    first = run_migration(
        MigrationOptions(source="dump.json", target="local:t.db", show_progress=False)
    )
    assert first.exit_code == 3
    rows = [json.loads(x) for x in Path(first.outputs["dead_letter"]).read_text().splitlines()]
    rows[0]["item"]["text"] = "fact 7, fixed by hand"
    (tmp_path / "fixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    replay = run_cli("migrate", "--source", "fixed.jsonl", "--target", "local:t.db", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    landed = Counter(
        m["metadata"]["_longmem_etl"]["source_id"] for m in _target_contents(tmp_path / "t.db")
    )
    assert sorted(landed) == sorted(m["id"] for m in source) and max(landed.values()) == 1

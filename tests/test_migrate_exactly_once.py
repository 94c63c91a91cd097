"""Exactly once across runs, proved with real processes: a migration is SIGKILLed partway through
a faulty target, the user changes something (the spec, the directory, the journal, the dump), runs
again, and an independent count of the target BY CONTENT shows 0 missing and 0 duplicated. Plus
two runs at once, work dirs we did not make, repair, changed payloads and the resume command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cli_support import journal_planned, run_cli, start_cli

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.migrate import (
    MigrationOptions,
    MigrationResult,
    repair_duplicates,
    run_migration,
    verify_source_target,
)

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "longmem_etl" / "sample_data" / "specs" / "migration-hygiene.toml"
FAULTS = "latency_ms=20&fail_rate=0.1&ambiguous_rate=0.05&seed=7"


def _memories(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "id": f"m-{i:05d}",
            "collection": ["notes", "crm"][i % 2],
            "text": f"fact number {i} about  topic {i % 13}",
            "importance": 0.5,
            "category": "fact",
            "metadata": {"n": i},
            "container_tag": None if i % 3 else f"user-{i % 5}",
            "created_at": f"2025-01-0{1 + i % 9}T10:00:00Z",
        }
        for i in range(start, start + n)
    ]


def _write_dump(path: Path, memories: list[dict]) -> None:
    path.write_text(json.dumps({"tenant": "acme", "memories": memories}))


def _content(memories: list[dict]) -> Counter:
    """What a target holds, by content alone (no markers, no ids)."""
    return Counter(
        (m.get("collection") or "default", m.get("container_tag"), " ".join(m["text"].split()))
        for m in memories
    )


def _target(db: Path) -> list[dict]:
    """The store's own export, fault-free and independent of the migrate package."""
    return open_endpoint(f"local:{db}", create=False).export_account()["memories"]


def _assert_exact(expected: list[dict], db: Path) -> None:
    want, got = _content(expected), _content(_target(db))
    missing = want - got
    duplicated = got - want
    assert not missing and not duplicated, (sum(missing.values()), sum(duplicated.values()))


def _journals(home: Path) -> list[Path]:
    return sorted(home.glob("migrations/*/journal.sqlite"))


def _done(journal: Path | None) -> int:
    if journal is None or not journal.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM items WHERE state='done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, **kw)


def _kill_partway(args: list[str], cwd: Path, journal_of, at_least: int) -> None:
    """Start the migration, SIGKILL it once its plan is finished and ``at_least`` items are
    journaled as done (what these tests change between runs is a planned migration; a kill
    before the plan is finished is `test_migrate_pipeline`'s)."""
    proc = start_cli(*args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (
        proc.poll() is None
        and (_done(journal_of()) < at_least or not journal_planned(journal_of()))
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _done(journal_of()) > 0 or at_least == 0


def _home() -> Path:
    return Path(os.environ["LONGMEM_ETL_HOME"])


def _migrate(source: Path, db: Path, *extra: str) -> list[str]:
    return [
        "migrate",
        "--source",
        str(source),
        "--target",
        f"local:{db}?{FAULTS}",
        "--chunk-size",
        "10",
        "--concurrency",
        "2",
        *extra,
    ]


def _latest_journal() -> Path | None:
    found = _journals(_home())
    return found[0] if found else None


def _inproc(source: Path, db: Path, **kw) -> MigrationResult:
    """A migration in this process (set-up and follow-up runs; the runs under test are processes)."""
    return run_migration(
        MigrationOptions(source=str(source), target=f"local:{db}", show_progress=False, **kw)
    )


def _reference(tmp_path: Path, source: Path, **kw) -> list[dict]:
    """What a clean, uninterrupted migration lands (for spec runs), into a throwaway target."""
    ref = tmp_path / "reference.db"
    assert _inproc(source, ref, **kw).exit_code == 0
    return _target(ref)


def test_spec_edited_between_runs_sends_only_what_is_missing(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    _write_dump(dump, _memories(400))
    spec = tmp_path / "spec.toml"
    shutil.copy(SPEC, spec)
    db = tmp_path / "t.db"
    _kill_partway(_migrate(dump, db, "--spec", str(spec)), tmp_path, _latest_journal, 60)
    landed = len(_target(db))
    spec.write_text(spec.read_text() + "\n# one comment line added\n")
    final = _run([*_migrate(dump, db, "--spec", str(spec)), "--json"], tmp_path)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["replanned"] == "the spec changed"
    assert (
        out["holdings"]["already_in_target"] >= landed - 20
    )  # ambiguous calls may not have landed
    assert out["verification"]["exact"] is True
    _assert_exact(_reference(tmp_path, dump, spec=str(spec)), db)


def test_same_command_from_another_directory_resumes_the_same_journal(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    mems = _memories(400)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _kill_partway(_migrate(dump, db), tmp_path / "a", _latest_journal, 60)
    final = _run([*_migrate(dump, db), "--json"], tmp_path / "b")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["resumed"] is True  # found from b/, not cwd-relative
    assert len(_journals(_home())) == 1
    assert not any((tmp_path / "a").iterdir()) and not any((tmp_path / "b").iterdir())
    _assert_exact(mems, db)


@pytest.mark.parametrize("how", ["other-journal", "journal-deleted"])
def test_new_journal_learns_from_the_target(tmp_path: Path, how: str) -> None:
    dump = tmp_path / "dump.json"
    mems = _memories(400)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    first = tmp_path / "j1" / "journal.sqlite"
    _kill_partway(_migrate(dump, db, "--journal", str(first)), tmp_path, lambda: first, 60)
    landed = len(_target(db))
    if how == "other-journal":
        args = _migrate(dump, db, "--journal", str(tmp_path / "j2" / "journal.sqlite"))
    else:
        shutil.rmtree(first.parent)
        args = _migrate(dump, db, "--journal", str(first))
    final = _run([*args, "--json"], tmp_path)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["resumed"] is False and out["holdings"]["already_in_target"] >= landed - 20
    assert out["upload"]["items_sent"] <= len(mems) - out["holdings"]["already_in_target"] + 40
    _assert_exact(mems, db)


@pytest.mark.parametrize("edit", ["grown", "edited"])
def test_dump_grown_or_edited_between_runs(tmp_path: Path, edit: str) -> None:
    dump = tmp_path / "dump.json"
    mems = _memories(400)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    _kill_partway(_migrate(dump, db), tmp_path, _latest_journal, 60)
    if edit == "grown":
        mems = [*mems, *_memories(1, start=400)]
    else:  # a memory that has not been sent yet gets new text (the last ones in plan order)
        mems = [*mems[:-1], {**mems[-1], "text": "rewritten before it was sent"}]
    _write_dump(dump, mems)
    final = _run([*_migrate(dump, db), "--json"], tmp_path)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["replanned"] == "the source changed" and out["verification"]["exact"] is True
    _assert_exact(mems, db)
    # and once more, nothing at all is sent
    again = _inproc(dump, db)
    assert again.upload["items_sent"] == 0 and again.exit_code == 0


def test_two_runs_at_once_one_refuses_naming_the_holder(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    mems = _memories(300)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    args = _migrate(dump, db)
    slow = [a.replace(FAULTS, "latency_ms=250") for a in args] + ["--concurrency", "1"]
    first = start_cli(
        *slow, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while _done(_latest_journal()) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.poll() is None
    # the same migration, with ANOTHER journal, from another directory: still one at a time
    second = _run([*args, "--journal", str(tmp_path / "other" / "journal.sqlite")], tmp_path)
    assert second.returncode == 2
    assert f"pid {first.pid}" in second.stderr and "started" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    # --wait queues behind the holder instead, then finds nothing left to send
    waiter = _run([*args, "--wait", "--json"], tmp_path)
    assert first.wait(timeout=120) == 0
    assert waiter.returncode == 0, waiter.stderr
    assert json.loads(waiter.stdout)["upload"]["items_sent"] == 0
    _assert_exact(mems, db)


def test_kill_releases_the_lock(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    mems = _memories(300)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    _kill_partway(_migrate(dump, db), tmp_path, _latest_journal, 20)
    final = _run(_migrate(dump, db), tmp_path)  # no stale lock after SIGKILL
    assert final.returncode == 0, final.stderr
    _assert_exact(mems, db)


def test_never_deletes_or_overwrites_what_it_did_not_make(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    _write_dump(dump, _memories(20))
    (tmp_path / "frozen").mkdir()
    (tmp_path / "frozen" / "precious.txt").write_text("mine")
    (tmp_path / "id_map.parquet").write_text("not yours")
    proc = _run(
        [
            "migrate",
            "--source",
            "dump.json",
            "--target",
            "local:t.db",
            "--journal",
            "./journal.sqlite",
        ],
        tmp_path,
    )
    assert (
        proc.returncode == 2
        and "frozen" in proc.stderr
        and "not made by longmem-etl" in proc.stderr
    )
    assert (tmp_path / "frozen" / "precious.txt").read_text() == "mine"
    assert (tmp_path / "id_map.parquet").read_text() == "not yours"
    assert not (tmp_path / "t.db").exists() and not (tmp_path / "journal.sqlite").exists()
    (tmp_path / "frozen" / "precious.txt").unlink()
    (tmp_path / "frozen").rmdir()
    proc = _run(
        [
            "migrate",
            "--source",
            "dump.json",
            "--target",
            "local:t.db",
            "--journal",
            "./journal.sqlite",
        ],
        tmp_path,
    )
    assert proc.returncode == 2 and "id_map.parquet" in proc.stderr
    assert (tmp_path / "id_map.parquet").read_text() == "not yours"


def test_duplicates_from_any_cause_are_never_exact_and_repair_fixes_them(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    mems = _memories(60)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    assert _inproc(dump, db).exit_code == 0
    store = open_endpoint(f"local:{db}")
    landed = store.export_account()["memories"]
    # three marked copies (as an overlapping run would make) and one unmarked copy by content
    for m in landed[:3]:
        store.add_many(
            [{"text": m["text"], "metadata": m["metadata"], "container_tag": m["container_tag"]}],
            collection=m["collection"],
        )
    store.add(
        landed[5]["text"],
        collection=landed[5]["collection"],
        container_tag=landed[5]["container_tag"],
    )
    rerun = _run(["migrate", "--source", str(dump), "--target", f"local:{db}"], tmp_path)
    assert rerun.returncode == 3 and "MISMATCH" in rerun.stdout and "EXACT" not in rerun.stdout
    listed = repair_duplicates(str(dump), f"local:{db}", dry_run=True)
    assert len(listed.extras) == 3 and listed.journal is None
    assert len(_target(db)) == 64  # the dry run deleted nothing
    kept = {m["id"] for m in landed[:3]}
    assert not kept & {e["target_id"] for e in listed.extras}  # the oldest stay
    fixed = _run(
        ["verify", "--source", str(dump), "--target", f"local:{db}", "--repair", "--json"],
        tmp_path,
    )
    out = json.loads(fixed.stdout)
    assert out["repair"]["deleted"] == 3 and Path(out["repair"]["journal"]).is_file()
    assert fixed.returncode == 3 and out["totals"]["duplicated"] == 1  # the unmarked copy: not ours
    assert kept <= {m["id"] for m in _target(db)}
    store.delete(
        next(m["id"] for m in _target(db) if "_longmem_etl" not in (m["metadata"] or {})),
        collection=landed[5]["collection"],
    )
    assert verify_source_target(str(dump), f"local:{db}").exact
    _assert_exact(mems, db)


def test_changed_payloads_are_listed_and_updated_only_on_request(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    mems = _memories(30)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    assert _inproc(dump, db).exit_code == 0
    mems[4] = {**mems[4], "text": "corrected text", "importance": 0.9}
    _write_dump(dump, mems)
    human = _run(["migrate", "--source", str(dump), "--target", f"local:{db}"], tmp_path)
    assert human.returncode == 0, human.stderr
    assert "1 item(s) in the target differ" in human.stdout and "--update-changed" in human.stdout
    assert "corrected text" not in {m["text"] for m in _target(db)}  # left alone
    listed = _inproc(dump, db, restart=True).as_dict()
    assert listed["holdings"]["changed"] == 1 and listed["holdings"]["updated"] == 0
    assert listed["holdings"]["changed_items"][0]["source_id"] == "m-00004"
    assert listed["upload"]["items_sent"] == 0
    upd = _inproc(dump, db, update_changed=True)
    assert upd.exit_code == 0 and upd.holdings["updated"] == 1
    _assert_exact(mems, db)
    assert len(_target(db)) == 30


def test_a_deliberate_second_copy(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    mems = _memories(20)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    assert _inproc(dump, db).exit_code == 0
    copy = _run(
        [
            "migrate",
            "--source",
            str(dump),
            "--target",
            f"local:{db}",
            "--copy",
            "sandbox",
            "--json",
        ],
        tmp_path,
    )
    assert copy.returncode == 0 and json.loads(copy.stdout)["upload"]["items_sent"] == 20
    again = _inproc(dump, db, copy="sandbox")
    assert again.upload["items_sent"] == 0 and again.exit_code == 0  # exactly once per copy name
    assert _content(_target(db)) == Counter({k: 2 for k in _content(mems)})
    # the plain migration's own verification now sees two copies of everything: never EXACT
    assert _inproc(dump, db).exit_code == 3


def test_resume_command_is_absolute_and_keeps_every_flag(tmp_path: Path) -> None:
    from longmem_etl.cli.migrate import NOT_RESUMED, command_for, parser
    from longmem_etl.migrate import MigrationOptions

    opts = MigrationOptions(
        source="d.json",
        target="local:t.db?latency_ms=5",
        spec="s.toml",
        mode="import",
        concurrency=3,
        chunk_size=7,
        max_bytes=4096,
        provenance=False,
        source_key_env="SRC",
        target_key_env="TGT",
        wait=True,
        update_changed=True,
        copy="c2",
        max_attempts=3,
        give_up_after=42.5,
    )
    cmd = command_for(opts, tmp_path / "j" / "journal.sqlite")
    for action in parser()._actions:
        if action.option_strings and action.dest not in NOT_RESUMED:
            assert action.option_strings[-1] in cmd, action.dest  # no flag can be dropped
    assert f"--source {Path('d.json').absolute()}" in cmd and "--max-bytes 4096" in cmd
    assert "--max-attempts 3" in cmd and "--give-up-after 42.5" in cmd
    assert f"local:{Path('t.db').absolute()}?latency_ms=5" in cmd
    assert f"--journal {tmp_path / 'j' / 'journal.sqlite'}" in cmd


def test_status_lists_migrations_from_anywhere(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    _write_dump(dump, _memories(10))
    assert _inproc(dump, tmp_path / "t.db").exit_code == 0
    (tmp_path / "elsewhere").mkdir()
    st = _run(["status", "--json"], tmp_path / "elsewhere")
    found = json.loads(st.stdout)["migrations"]
    assert st.returncode == 0 and len(found) == 1 and found[0]["items_done"] == 10
    assert str(_home()) in found[0]["journal"]


def _repair_journal_counts(home: Path) -> tuple[int, int]:
    for path in home.glob("repairs/*/repair.sqlite"):
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            try:
                rows = dict(con.execute("SELECT state, count(*) FROM extras GROUP BY 1").fetchall())
            finally:
                con.close()
            return rows.get("planned", 0), rows.get("deleted", 0)
        except sqlite3.Error:
            return 0, 0
    return 0, 0


def _kill_a_repair_partway(tmp_path: Path) -> tuple[Path, Path, list[dict], Any, list[dict]]:
    """Migrate 40 memories, add a second copy of 30 of them (an overlapping run), then SIGKILL a
    real `verify --repair` once it has deleted 3. Returns (dump, target db, source memories, the
    target store, the memories as first landed)."""
    dump = tmp_path / "dump.json"
    mems = _memories(40)
    _write_dump(dump, mems)
    db = tmp_path / "t.db"
    assert (
        _run(["migrate", "--source", str(dump), "--target", f"local:{db}"], tmp_path).returncode
        == 0
    )
    store = open_endpoint(f"local:{db}")
    landed = store.export_account()["memories"]
    for m in landed[:30]:  # an overlapping run's copies
        store.add_many(
            [{"text": m["text"], "metadata": m["metadata"], "container_tag": m["container_tag"]}],
            collection=m["collection"],
        )
    args = ["verify", "--source", str(dump), "--target", f"local:{db}?latency_ms=80", "--repair"]
    proc = start_cli(*args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _repair_journal_counts(_home())[1] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return dump, db, mems, store, landed


def test_repair_killed_partway_resumes_its_list(tmp_path: Path) -> None:
    dump, db, mems, store, landed = _kill_a_repair_partway(tmp_path)
    planned, deleted = _repair_journal_counts(_home())
    assert planned > 0 and deleted >= 3 and planned + deleted == 30
    again = _run(
        ["verify", "--source", str(dump), "--target", f"local:{db}", "--repair", "--json"], tmp_path
    )
    out = json.loads(again.stdout)
    assert again.returncode == 0, again.stderr
    assert out["repair"]["resumed"] is True
    assert out["repair"]["deleted"] + out["repair"]["already_gone"] == planned
    assert {m["id"] for m in landed} == {m["id"] for m in _target(db)}  # the oldest stayed
    _assert_exact(mems, db)


def test_which_held_by_marker_by_id_copies_and_changes() -> None:
    from longmem_etl.migrate import which_held
    from longmem_etl.migrate.keys import with_marker

    target = [
        {
            "id": "t1",
            "text": "a",
            "created_at": "2025-01-02",
            "metadata": with_marker({}, "s1", "K", "c1"),
        },
        {
            "id": "t0",
            "text": "a",
            "created_at": "2025-01-01",
            "metadata": with_marker({}, "s1", "K", "c1"),
        },
        {"id": "t2", "text": "b", "metadata": with_marker({}, "s2", "K", "old")},
        {"id": "t3", "text": "c", "metadata": with_marker({}, "s3", "OTHER", "c3")},
        {"id": "s4", "text": "d", "metadata": {}},
    ]
    items = [
        {"source_id": s, "content": c}
        for s, c in [("s1", "c1"), ("s2", "new"), ("s3", "c3"), ("s4", None), ("s5", None)]
    ]
    held = {r["source_id"]: r for r in which_held(items, target, source_key="K").to_pylist()}
    assert set(held) == {"s1", "s2"}
    assert held["s1"]["target_id"] == "t0" and held["s1"]["copies"] == 2  # the oldest copy
    assert held["s2"]["changed"] is True and held["s1"]["changed"] is False
    by_id = {
        r["source_id"]: r for r in which_held(items, target, source_key="K", by_id=True).to_pylist()
    }
    assert set(by_id) == {"s1", "s2", "s4"} and by_id["s4"]["by"] == "id"


def test_a_resumed_repair_never_deletes_what_became_the_last_copy(tmp_path: Path) -> None:
    """A repair is killed with part of its list left; meanwhile the copies that were to stay are
    deleted by hand for two of the listed memories. The resumed repair checks its list against the
    target first: those two listed copies are now the only ones and stay; every memory once."""
    dump, db, mems, store, landed = _kill_a_repair_partway(tmp_path)
    (journal,) = _home().glob("repairs/*/repair.sqlite")
    con = sqlite3.connect(journal)
    try:
        listed = con.execute("SELECT source_id FROM extras WHERE state = 'planned'").fetchall()
    finally:
        con.close()
    assert len(listed) >= 2
    victims = {sid for (sid,) in listed[:2]}
    for m in landed:  # the copies that were to stay, deleted by hand
        if m["metadata"]["_longmem_etl"]["source_id"] in victims:
            store.delete(m["id"], collection=m["collection"])
    again = _run(
        ["verify", "--source", str(dump), "--target", f"local:{db}", "--repair", "--json"], tmp_path
    )
    out = json.loads(again.stdout)
    assert again.returncode == 0, again.stderr
    assert out["repair"]["resumed"] is True and out["repair"]["no_longer_extra"] == 2
    _assert_exact(mems, db)

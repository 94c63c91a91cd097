"""restore: point-in-time choice, bring back what is missing exactly once, --mirror, --dry-run,
filters and their sandbox, and a SIGKILL mid-restore then re-run (real subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cli_support import SAMPLES, done_items, run_cli, start_cli, stored_memories

from longmem_etl.api.local import LocalStore
from longmem_etl.cli.main import main
from longmem_etl.snapshots import list_snapshots

T1, T2 = "snapshot=20261101T020000Z", "snapshot=20261115T020000Z"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, Path]:
    """A store seeded with 1000 memories and its backup (named T1)."""
    tmp = tmp_path_factory.mktemp("seed")
    db = tmp / "acct.db"
    assert main(["local", "seed", f"local:{db}", "--from", str(SAMPLES / "globex-dirty.json")]) == 0
    assert main(["backup", "--source", f"local:{db}", "--root", str(tmp / "snaps")]) == 0
    (snap,) = list_snapshots(tmp / "snaps")
    named = snap.parent / T1
    snap.rename(named)
    return db, named


@pytest.fixture
def account(tmp_path, seeded, monkeypatch):
    """A fresh copy of the account and the snapshot root; cwd is tmp_path (work dirs land there)."""
    db, snap = seeded
    shutil.copy(db, tmp_path / "acct.db")
    root = tmp_path / "snaps"
    shutil.copytree(snap.parent.parent, root)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "acct.db", root / "tenant=globex" / T1


def _lose_300_gain_50(db: Path) -> tuple[list[dict], list[str]]:
    store = LocalStore(db, create=False)
    try:
        before = store.export_account()["memories"]
        for m in before[100:400]:
            store.delete(m["id"], collection=m["collection"])
        new = store.add_many(
            [f"written after the snapshot {i}" for i in range(50)], collection="new"
        )
    finally:
        store.close()
    return before, new["ids"]


def _marker(m: dict) -> str | None:
    meta = m.get("metadata")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            return None
    mark = meta.get("_longmem_etl") if isinstance(meta, dict) else None
    return mark.get("source_id") if isinstance(mark, dict) else None


def _instant(v):
    """The same instant may be re-rendered (``.123Z`` / ``.123000Z``): compare instants."""
    try:
        t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return v
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


def _held(snapshot_ids: list[str], memories: list[dict]) -> Counter:
    """Independent of restore.py: how many target memories hold each snapshot id."""
    c: Counter = Counter()
    wanted = set(snapshot_ids)
    for m in memories:
        sid = _marker(m)
        if m["id"] in wanted:
            c[m["id"]] += 1
        elif sid in wanted:
            c[sid] += 1
    return c


def _run(args: list[str], capsys) -> tuple[int, dict]:
    capsys.readouterr()
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def test_as_of_between_two_snapshots_picks_the_older(account, capsys):
    db, snap1 = account
    _lose_300_gain_50(db)
    assert main(["backup", "--source", f"local:{db}", "--root", str(snap1.parent.parent)]) == 0
    newest = [s for s in list_snapshots(snap1.parent.parent) if s.name != T1][0]
    newest.rename(snap1.parent / T2)
    root = str(snap1.parent.parent)
    base = ["restore", "--root", root, "--tenant", "globex", "--target", f"local:{db}", "--dry-run"]
    rc, out = _run([*base, "--as-of", "2026-11-10T00:00:00Z"], capsys)
    assert rc == 0 and Path(out["snapshot"]).name == T1
    assert out["plan"]["selected"] == 1000 and out["plan"]["add"] == 300
    rc, out = _run([*base, "--as-of", "2026-11-15T02:00:00+00:00"], capsys)  # exactly T2
    assert Path(out["snapshot"]).name == T2 and out["plan"]["selected"] == 750
    rc, out = _run([*base, "--as-of", "2026-11-15T03:00:00+01:00"], capsys)  # 02:00Z, offset
    assert Path(out["snapshot"]).name == T2
    assert main([*base, "--as-of", "2026-10-31"]) == 2
    err = capsys.readouterr().err
    assert "no snapshot of 'globex' at or before 2026-10-31T00:00:00Z" in err
    assert err.count("\n") == 1


def test_lost_300_gained_50_restore_then_mirror(account, capsys):
    db, snap = account
    before, new_ids = _lose_300_gain_50(db)
    ids = [m["id"] for m in before]
    target = ["--target", f"local:{db}"]
    # dry run: counts and examples, nothing changes, no work dir
    state = sorted(json.dumps(m, sort_keys=True, default=str) for m in stored_memories(db))
    rc, dry = _run(["restore", str(snap), *target, "--dry-run", "--mirror"], capsys)
    assert rc == 0 and dry["plan"]["add"] == 300 and dry["plan"]["remove"] == 50
    assert set(dry["plan"]["examples"]["remove"]) <= set(new_ids)
    assert set(dry["plan"]["examples"]["add"]) <= {m["id"] for m in before[100:400]}
    assert sorted(json.dumps(m, sort_keys=True, default=str) for m in stored_memories(db)) == state
    assert not Path(".longmem-etl").exists()
    # restore: all 1000 held exactly once, the 50 new ones kept
    rc, out = _run(["restore", str(snap), *target], capsys)
    assert rc == 0, out
    assert out["added"] == 300 and out["verification"]["exact"] is True
    after = stored_memories(db)
    assert len(after) == 1050
    held = _held(ids, after)
    assert set(held) == set(ids) and set(held.values()) == {1}
    assert set(new_ids) <= {m["id"] for m in after}
    by_id = {m["id"]: m for m in before}
    restored = [m for m in after if m["id"] not in by_id and m["collection"] != "new"]
    assert len(restored) == 300
    for m in restored:  # content and fields came back, not just markers
        orig = by_id[_marker(m)]
        assert (m["text"], m["collection"]) == (orig["text"], orig["collection"])
        if orig.get("created_at"):  # the dirty sample has some without; the store fills those
            assert _instant(m["created_at"]) == _instant(orig["created_at"])
    # again: nothing to send
    rc, again = _run(["restore", str(snap), *target], capsys)
    assert rc == 0 and again["plan"]["add"] == 0 and again["added"] == 0
    assert len(stored_memories(db)) == 1050
    # a bad edit since: the default leaves it (would-differ); mirror puts the snapshot's text back
    victim = before[0]
    store = LocalStore(db, create=False)
    store.update(victim["id"], collection=victim["collection"], text="rewritten by a bad clean")
    store.close()
    rc, again = _run(["restore", str(snap), *target], capsys)
    assert again["plan"]["differ"] == 1 and again["plan"]["examples"]["differ"] == [victim["id"]]
    assert again["added"] == 0
    # mirror: equal to the snapshot
    rc, mir = _run(["restore", str(snap), *target, "--mirror", "--yes"], capsys)
    assert rc == 0 and mir["removed"] == 51 and mir["added"] == 1
    assert mir["verification"]["exact"] is True
    final = stored_memories(db)
    assert len(final) == 1000
    assert _held(ids, final) == Counter(dict.fromkeys(ids, 1))
    want = Counter((m["collection"], m["text"]) for m in before)
    assert Counter((m["collection"], m["text"]) for m in final) == want


def test_filters_select_and_where_is_sandboxed(account, capsys, tmp_path):
    db, snap = account
    before, _ = _lose_300_gain_50(db)
    lost = before[100:400]
    target = ["--target", f"local:{db}", "--dry-run"]
    coll = lost[0]["collection"]
    rc, out = _run(["restore", str(snap), *target, "--collections", coll], capsys)
    assert rc == 0 and out["plan"]["add"] == sum(m["collection"] == coll for m in lost)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# three of the lost\n" + "\n".join(m["id"] for m in lost[:3]) + "\n\n")
    rc, out = _run(["restore", str(snap), *target, "--ids", str(ids_file)], capsys)
    assert out["plan"]["selected"] == 3 and out["plan"]["add"] == 3
    rc, out = _run(["restore", str(snap), *target, "--where", "importance >= 0.5"], capsys)
    assert out["plan"]["add"] == sum(
        isinstance(m.get("importance"), int | float) and m["importance"] >= 0.5 for m in lost
    )
    secret = tmp_path / "secret.csv"
    secret.write_text("id\nx\n")
    for bad in (
        f"id IN (SELECT id FROM read_csv('{secret}'))",  # no file access
        "1) UNION ALL SELECT * FROM memories WHERE (1",  # not one expression
        "no_such_column > 1",
        "",
        "(SELECT count(*) FROM memories) > 0",  # names a table
    ):
        capsys.readouterr()
        assert main(["restore", str(snap), *target, "--where", bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("longmem-etl restore: --where") and err.count("\n") == 1
    # checked by the same sandbox as a spec's filter: the session's own tables are out of reach
    capsys.readouterr()
    peek = ["--collections", coll, "--where", "collection IN (SELECT v FROM sel_collections)"]
    assert main(["restore", str(snap), *target, *peek]) == 2
    assert "names table 'sel_collections'" in capsys.readouterr().err
    assert main(["restore", str(snap), *target, "--where", "true", "--mirror"]) == 2
    assert main(["restore", *target, "--root", str(snap.parent.parent)]) == 2
    assert main(["restore", str(tmp_path), *target]) == 2


def test_damaged_snapshot_is_refused(account, capsys):
    db, snap = account
    f = snap / "memories.parquet"
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["restore", str(snap), "--target", f"local:{db}"]) == 2
    assert "memories.parquet" in capsys.readouterr().err


def _done(cwd: Path | None = None) -> int:
    """Items landed by the restore's journals: in the state home, or (an older version's layout)
    under ``cwd``."""
    home = Path(os.environ["LONGMEM_ETL_HOME"])
    journals = list(home.glob("restores/*/migrations/*/journal.sqlite"))
    if cwd is not None:
        journals += cwd.glob(".longmem-etl/restores/*/migrations/*/journal.sqlite")
    return done_items(journals)


def test_sigkill_mid_restore_then_rerun_is_exact(account):
    db, snap = account
    before, new_ids = _lose_300_gain_50(db)
    cwd = db.parent
    target = f"local:{db}?latency_ms=150&ambiguous_rate=0.1&seed=5"
    args = ["restore", str(snap), "--target", target, "--concurrency", "1", "--json"]
    _kill_mid_restore(args, cwd)
    final = run_cli(*args, cwd=cwd)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["resumed_pending"] is True and out["verification"]["exact"] is True
    after = stored_memories(db)
    ids = [m["id"] for m in before]
    assert len(after) == 1050
    assert _held(ids, after) == Counter(dict.fromkeys(ids, 1))
    assert set(new_ids) <= {m["id"] for m in after}


def test_the_same_restore_twice_at_once_is_refused(account, capsys, tmp_path):
    import fcntl
    import os

    db, snap = account
    _lose_300_gain_50(db)
    work = tmp_path / "work"
    work.mkdir()
    fd = os.open(work / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the first one is still running
    args = ["restore", str(snap), "--target", f"local:{db}", "--work-dir", str(work)]
    try:
        capsys.readouterr()
        assert main(args) == 2
        assert "already running" in capsys.readouterr().err
        assert len(stored_memories(db)) == 750
    finally:
        os.close(fd)
    assert main(args) == 0 and len(stored_memories(db)) == 1050


def test_ctrl_c_exits_130_and_a_rerun_from_another_directory_is_exact(account, tmp_path):
    db, snap = account
    before, new_ids = _lose_300_gain_50(db)
    cwd = db.parent
    target = f"local:{db}?latency_ms=300&seed=9"
    args = ["restore", str(snap), "--target", target, "--concurrency", "1", "--json"]
    proc = start_cli(*args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _done(cwd) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert json.loads(out)["interrupted"] is True
    assert 100 <= len(stored_memories(db)) - 750 < 300
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    final = run_cli(*args, cwd=elsewhere)
    assert final.returncode == 0, final.stderr
    res = json.loads(final.stdout)
    # the work dir is in the state home: the interrupted run's journal is continued from here
    assert res["resumed_pending"] is True and res["verification"]["exact"] is True
    ids = [m["id"] for m in before]
    after = stored_memories(db)
    assert len(after) == 1050 and _held(ids, after) == Counter(dict.fromkeys(ids, 1))


def _kill_mid_restore(args: list[str], cwd: Path) -> None:
    proc = start_cli(*args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _done(cwd) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 100 <= _done(cwd) < 300


def _exactly_back(db: Path, before: list[dict], new_ids: list[str]) -> None:
    ids = [m["id"] for m in before]
    after = stored_memories(db)
    assert len(after) == 1050 and _held(ids, after) == Counter(dict.fromkeys(ids, 1))
    assert set(new_ids) <= {m["id"] for m in after}


def test_sigkill_then_rerun_from_another_directory_resumes_the_pending_journal(account, tmp_path):
    """The work dir is in the state home: another cwd finds the killed run's selection and journal
    (ambiguous timeouts included) and ends exact, with nothing written under either cwd."""
    db, snap = account
    before, new_ids = _lose_300_gain_50(db)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    target = f"local:{db}?latency_ms=150&ambiguous_rate=0.1&seed=5"
    args = ["restore", str(snap), "--target", target, "--concurrency", "1", "--json"]
    _kill_mid_restore(args, first)
    final = run_cli(*args, cwd=second)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["resumed_pending"] is True and out["verification"]["exact"] is True
    assert out["work_dir"].startswith(os.environ["LONGMEM_ETL_HOME"])
    assert not out["legacy_work_dir"]
    assert list(first.iterdir()) == [] and list(second.iterdir()) == []
    _exactly_back(db, before, new_ids)


def test_the_same_restore_from_two_directories_at_once_is_refused(account, tmp_path):
    db, snap = account
    before, new_ids = _lose_300_gain_50(db)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    target = f"local:{db}?latency_ms=100&seed=3"
    args = ["restore", str(snap), "--target", target, "--concurrency", "1", "--json"]
    proc = start_cli(*args, cwd=first, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _done() < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before the second could start"
    proc.send_signal(signal.SIGSTOP)  # still running, holding its locks, whatever the load
    try:
        other = run_cli(*args, cwd=second)
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert other.returncode == 2, other.stderr
    assert "already running" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    assert proc.returncode == 0, err
    assert json.loads(out)["verification"]["exact"] is True
    _exactly_back(db, before, new_ids)


def test_an_older_versions_pending_restore_in_the_cwd_is_found_and_resumed(account, tmp_path):
    """Older versions kept the work dir in ./.longmem-etl/restores/<id>/: a run killed there is
    continued from its journal (not planned again), and the next restore uses the state home."""
    from longmem_etl.restore import RestoreOptions, restore_id_of

    db, snap = account
    before, new_ids = _lose_300_gain_50(db)
    cwd = tmp_path / "old-cwd"
    cwd.mkdir()
    target = f"local:{db}?latency_ms=150&ambiguous_rate=0.1&seed=5"
    rid = restore_id_of(snap, RestoreOptions(target=target))
    legacy = cwd / ".longmem-etl" / "restores" / rid
    args = ["restore", str(snap), "--target", target, "--concurrency", "1", "--json"]
    _kill_mid_restore([*args, "--work-dir", str(legacy)], cwd)  # what an older version did
    final = run_cli(*args, cwd=cwd)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["legacy_work_dir"] is True and out["resumed_pending"] is True
    assert out["work_dir"] == str(legacy) and out["verification"]["exact"] is True
    _exactly_back(db, before, new_ids)
    again = run_cli(*args, cwd=cwd)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert not out["legacy_work_dir"] and out["plan"]["add"] == 0
    _exactly_back(db, before, new_ids)


@pytest.mark.parametrize("state", ['{"selection": "/tm', '{"selection": 5}', None])
def test_a_damaged_state_file_is_ignored_and_the_rerun_is_exact(account, state):
    """state.json truncated by a crash or edited by hand, or the whole state home lost (None): the
    account decides what is missing (what the killed run landed carries its marker), never an
    internal error."""
    db, snap = account
    before, new_ids = _lose_300_gain_50(db)
    cwd = db.parent
    target = f"local:{db}?latency_ms=150&seed=5"
    args = ["restore", str(snap), "--target", target, "--concurrency", "1", "--json"]
    _kill_mid_restore(args, cwd)
    (work,) = (Path(os.environ["LONGMEM_ETL_HOME"]) / "restores").iterdir()
    assert (work / "state.json").is_file()
    if state is None:
        shutil.rmtree(os.environ["LONGMEM_ETL_HOME"])
    else:
        (work / "state.json").write_text(state)
    final = run_cli(*args, cwd=cwd)
    assert final.returncode == 0, final.stderr
    out = json.loads(final.stdout)
    assert out["resumed_pending"] is False and out["verification"]["exact"] is True
    assert out["plan"]["already_held"] >= 800
    _exactly_back(db, before, new_ids)

"""`forget` never removes the source of a migration that is not finished, wherever that migration
keeps its journal and wherever its source lives (docs/guarantees.md, `migrate/inuse.py`).

Real processes: a migration is SIGKILLed mid-upload, `forget --keep-last 1` runs (dry run first:
it must say what it keeps and why), then the same migration command resumes and must end exact,
every memory once; once it has finished, the next `forget` removes the snapshot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from cli_support import SAMPLES, done_items, run_cli, start_cli, stored_memories

from longmem_etl.api.local import LocalStore


def _held_once(db: Path, n: int) -> None:
    target = stored_memories(db)
    sids = Counter(m["metadata"]["_longmem_etl"]["source_id"] for m in target)
    assert len(target) == n and len(sids) == n and max(sids.values()) == 1


def _two_snapshots(tmp_path: Path, root: str | Path) -> list[str]:
    """Two full snapshots of one tenant under ``root`` (1000 memories, then one more): old, new.
    Made in this process (the library calls the CLI makes): only what is tested runs as a child."""
    from longmem_etl import backup

    db = tmp_path / "acct.db"
    store = LocalStore(db)
    store.seed_dump(json.loads((SAMPLES / "globex-dirty.json").read_text()))
    store.close()
    paths = [str(backup(f"local:{db}", root, incremental=False).path)]
    store = LocalStore(db)
    store.add("one more", collection="default")
    store.close()
    time.sleep(1.05)  # the next snapshot's name is the next second
    paths.append(str(backup(f"local:{db}", root, incremental=False).path))
    return paths


def _kill_mid_upload(args: list, journals, env: dict | None = None) -> None:
    """Start ``migrate ARGS``, SIGKILL it once 100 memories have landed (journals: a callable
    giving the journal files to count)."""
    proc = start_cli(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and done_items(journals()) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _forget(root: str | Path, *extra: str, env: dict | None = None) -> dict:
    r = run_cli("forget", "--root", root, "--keep-last", "1", "--json", *extra, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_journal_outside_the_state_home_holds_its_source_through_kill_forget_resume(
    tmp_path: Path,
) -> None:
    home = Path(os.environ["LONGMEM_ETL_HOME"])
    root = tmp_path / "snaps"
    old, new = _two_snapshots(tmp_path, root)
    journal = tmp_path / "elsewhere" / "job" / "journal.sqlite"
    target = tmp_path / "dst.db"
    mig = ["migrate", "--source", old, "--target", f"local:{target}?latency_ms=40&seed=3",
           "--concurrency", "1", "--chunk-size", "20", "--journal", journal, "--json"]  # fmt: skip
    _kill_mid_upload(mig, lambda: [journal])
    assert not list(home.glob("migrations/*/journal.sqlite"))  # only the --journal elsewhere
    (hold,) = home.glob("holds/*.json")
    mid = hold.stem
    dry = _forget(root, "--dry-run")
    (plan,) = dry["tenants"]
    kept = {k["snapshot"]: k["reasons"] for k in plan["keep"]}
    assert kept[old] == [f"source of unfinished migration {mid} (journal {journal})"]
    assert plan["remove"] == [] and "last snapshot" in kept[new]
    real = _forget(root)
    assert real["removed"] == [] and Path(old, "manifest.json").is_file()
    again = run_cli(*mig)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["verification"]["exact"] is True
    _held_once(target, 1000)
    assert not hold.exists()  # finished: the hold is gone, the snapshot is the policy's again
    assert _forget(root)["removed"] == [old] and not Path(old).exists()


def test_a_stale_hold_keeps_nothing_and_a_journal_put_back_keeps_its_source(
    tmp_path: Path,
) -> None:
    """A killed migration whose journal the user then deleted holds nothing (its resume would
    plan afresh anyway); the same journal put back (an old copy restored) holds the source again,
    and the resume from it is exact."""
    import shutil

    home = Path(os.environ["LONGMEM_ETL_HOME"])
    root = tmp_path / "snaps"
    old, _new = _two_snapshots(tmp_path, root)
    target = tmp_path / "dst.db"
    mig = ["migrate", "--source", old, "--target", f"local:{target}?latency_ms=40&seed=4",
           "--concurrency", "1", "--chunk-size", "20", "--json"]  # fmt: skip
    _kill_mid_upload(mig, lambda: home.glob("migrations/*/journal.sqlite"))
    (work,) = (home / "migrations").iterdir()
    shutil.move(work, tmp_path / "saved-work")
    dry = _forget(root, "--dry-run")
    assert dry["tenants"][0]["remove"] == [old]  # nothing unfinished reads it any more
    shutil.move(tmp_path / "saved-work", work)  # put back: unfinished again
    dry = _forget(root, "--dry-run")
    assert dry["tenants"][0]["remove"] == []
    assert _forget(root)["removed"] == []
    again = run_cli(*mig)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["verification"]["exact"] is True
    _held_once(target, 1000)


def test_a_migration_starting_while_forget_holds_the_root_waits_and_never_reads_a_removed_source(
    tmp_path: Path,
) -> None:
    """The hold is written under the root's forget lock: a migration that starts while a forget
    runs waits for it; if that forget removed its source it stops with one line, nothing sent."""
    from longmem_etl.retention import forget_lock, remove_snapshot

    root = tmp_path / "snaps"
    old, _new = _two_snapshots(tmp_path, root)
    target = tmp_path / "dst.db"
    with forget_lock(root):
        proc = start_cli(
            "migrate", "--source", old, "--target", f"local:{target}",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        holders = Path(os.environ["LONGMEM_ETL_HOME"]) / "locks"
        while not list(holders.glob("*.lock")) and time.monotonic() < deadline:
            time.sleep(0.02)  # the migration holds its own lock: it is at the root's lock now
        time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()
        assert remove_snapshot(Path(old)) == "removed"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    (line,) = err.strip().splitlines()
    assert old in line and "removed by forget" in line, line
    assert not target.exists() or stored_memories(target) == []
    assert not list(Path(os.environ["LONGMEM_ETL_HOME"]).glob("holds/*.json"))


def test_an_s3_source_is_held_on_its_s3_root_through_kill_forget_resume(
    s3, s3_bucket: str, tmp_path: Path
) -> None:
    home = Path(os.environ["LONGMEM_ETL_HOME"])
    root = f"s3://{s3_bucket}/snaps"
    old, new = _two_snapshots(tmp_path, root)
    assert old.startswith("s3://") and new.startswith("s3://")
    target = tmp_path / "dst.db"
    mig = ["migrate", "--source", old, "--target", f"local:{target}?latency_ms=40&seed=5",
           "--concurrency", "1", "--chunk-size", "20", "--json"]  # fmt: skip
    _kill_mid_upload(mig, lambda: home.glob("migrations/*/journal.sqlite"))
    (hold,) = home.glob("holds/*.json")
    assert json.loads(hold.read_text())["source"] == old
    dry = _forget(root, "--dry-run")
    (plan,) = dry["tenants"]
    kept = {k["snapshot"]: k["reasons"] for k in plan["keep"]}
    assert kept[old] == [f"source of unfinished migration {hold.stem}"] and plan["remove"] == []
    assert _forget(root)["removed"] == []
    again = run_cli(*mig)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["verification"]["exact"] is True
    _held_once(target, 1000)
    assert not hold.exists()
    assert _forget(root)["removed"] == [old]


def test_a_migration_of_another_state_home_holds_its_source_through_kill_forget_resume(
    tmp_path: Path,
) -> None:
    """The migration runs with one ``LONGMEM_ETL_HOME``, ``forget`` with another: the hold the
    migration keeps in the snapshot root (``.migration-holds/``) is what the forget sees."""
    root = tmp_path / "snaps"
    old, _new = _two_snapshots(tmp_path, root)
    other = {"LONGMEM_ETL_HOME": str(tmp_path / "other-home")}
    target = tmp_path / "dst.db"
    mig = ["migrate", "--source", old, "--target", f"local:{target}?latency_ms=40&seed=6",
           "--concurrency", "1", "--chunk-size", "20", "--json"]  # fmt: skip
    _kill_mid_upload(
        mig, lambda: (tmp_path / "other-home").glob("migrations/*/journal.sqlite"), other
    )
    (hold,) = (root / ".migration-holds").glob("*.json")
    (journal,) = (tmp_path / "other-home").glob("migrations/*/journal.sqlite")
    dry = _forget(root, "--dry-run")  # this test's own state home knows nothing of it
    (plan,) = dry["tenants"]
    kept = {k["snapshot"]: k["reasons"] for k in plan["keep"]}
    assert kept[old] == [f"source of unfinished migration {hold.stem} (journal {journal})"]
    assert plan["remove"] == [] and _forget(root)["removed"] == []
    again = run_cli(*mig, env=other)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["verification"]["exact"] is True
    _held_once(target, 1000)
    assert not hold.exists()
    assert _forget(root)["removed"] == [old]
    check = run_cli("check", "--root", root, "--json")  # nothing of ours left looks like debris
    assert check.returncode == 0 and json.loads(check.stdout)["debris"] == [], check.stdout


def test_a_hold_from_another_host_keeps_its_source_and_says_how_to_let_go(tmp_path: Path) -> None:
    """A root shared between machines: a hold whose journal is on another host cannot be
    checked from here, so it keeps the snapshot, and the reason names the file to remove."""
    root = tmp_path / "snaps"
    old, _new = _two_snapshots(tmp_path, root)
    holds = root / ".migration-holds"
    holds.mkdir()
    rel = f"{Path(old).parent.name}/{Path(old).name}"
    record = {"migration_id": "abc", "journal": "/elsewhere/journal.sqlite", "source": rel}
    (holds / "abc.json").write_text(json.dumps({**record, "host": "another-machine"}))
    (plan,) = _forget(root, "--dry-run")["tenants"]
    (reason,) = {k["snapshot"]: k["reasons"] for k in plan["keep"]}[old]
    assert "on host another-machine" in reason and str(holds / "abc.json") in reason, reason
    import socket

    here = {**record, "host": socket.gethostname()}
    # made on this host by a live process whose journal does not exist yet (it is starting): kept
    (holds / "abc.json").write_text(json.dumps({**here, "pid": os.getpid()}))
    assert _forget(root, "--dry-run")["tenants"][0]["remove"] == []
    # made on this host, its writer gone and its journal too: stale, keeps nothing, swept
    (holds / "abc.json").write_text(json.dumps({**here, "tool": "longmem-etl"}))
    done = _forget(root)
    assert done["removed"] == [old] and done["stale_holds"] == [str(holds / "abc.json")]
    assert not (holds / "abc.json").exists()


def test_ctrl_c_while_waiting_for_a_forget_exits_130_and_registers_nothing(tmp_path: Path) -> None:
    from longmem_etl.retention import forget_lock

    home = Path(os.environ["LONGMEM_ETL_HOME"])
    root = tmp_path / "snaps"
    old, _new = _two_snapshots(tmp_path, root)
    target = tmp_path / "dst.db"
    with forget_lock(root):
        proc = start_cli("migrate", "--source", old, "--target", f"local:{target}",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while not list(home.glob("locks/*.lock")) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not list(home.glob("holds/*.json")) and not (root / ".migration-holds").exists()
    assert not target.exists() or stored_memories(target) == []

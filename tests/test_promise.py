"""The promise across stateful verbs (docs/guarantees.md): nothing lost, nothing duplicated, nothing
of the user's touched, whatever happens between runs. Real processes throughout; the rows of the
guarantees matrix that other test files do not already prove."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_support import SAMPLES, done_items, run_cli, start_cli, stored_memories

from longmem_etl.api.local import LocalStore
from longmem_etl.snapshots import list_snapshots


def _done(home: Path) -> int:
    return done_items(home.glob("migrations/*/journal.sqlite"))


def _two_backups(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An account (1000 memories, then one more) and two backups of it: a full one, then an
    increment whose parent is the full one. Returns (db, full, increment)."""
    db = tmp_path / "acct.db"
    root = tmp_path / "snaps"
    assert (
        run_cli("local", "seed", f"local:{db}", "--from", SAMPLES / "globex-dirty.json").returncode
        == 0
    )
    assert run_cli("backup", "--source", f"local:{db}", "--root", root).returncode == 0
    store = LocalStore(db)
    store.add("one more", collection="default")
    store.close()
    time.sleep(1.05)  # the next snapshot's name is the next second
    assert run_cli("backup", "--source", f"local:{db}", "--root", root).returncode == 0
    full, inc = list_snapshots(root)
    assert "incremental" in json.loads((inc / "manifest.json").read_text())
    return db, full, inc


def _held_once(target: list[dict], n: int) -> None:
    sids = Counter(m["metadata"]["_longmem_etl"]["source_id"] for m in target)
    assert len(target) == n and len(sids) == n and max(sids.values()) == 1


def test_forget_keeps_the_source_of_an_unfinished_migration(tmp_path: Path) -> None:
    """forget while a migration from an old snapshot is in flight (stopped), then killed: the
    snapshot stays (reason names the migration), the re-run finishes exactly; once finished, the
    next forget removes it (and the increment built on it is rebased, still readable)."""
    home = Path(os.environ["LONGMEM_ETL_HOME"])
    db, full, inc = _two_backups(tmp_path)
    target = tmp_path / "dst.db"
    mig = ["migrate", "--source", full, "--target", f"local:{target}?latency_ms=40&seed=1",
           "--concurrency", "1", "--chunk-size", "20", "--json"]  # fmt: skip
    proc = start_cli(*mig, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _done(home) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before forget could run"
    proc.send_signal(signal.SIGSTOP)  # in flight: holding its locks, mid-upload
    try:
        forget = run_cli("forget", "--root", tmp_path / "snaps", "--keep-last", "1", "--json")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert forget.returncode == 0, forget.stderr
    (plan,) = json.loads(forget.stdout)["tenants"]
    kept = {Path(k["snapshot"]).name: k["reasons"] for k in plan["keep"]}
    (mid,) = [p.name for p in (home / "migrations").iterdir()]
    assert f"source of unfinished migration {mid}" in kept[full.name]
    assert plan["remove"] == [] and (full / "manifest.json").is_file()
    again = run_cli(*mig)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["verification"]["exact"] is True
    _held_once(stored_memories(target), 1000)
    # finished: the snapshot is the policy's again
    after = run_cli("forget", "--root", tmp_path / "snaps", "--keep-last", "1", "--json")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["removed"] == [str(full)] and not full.exists()
    count = run_cli("sql", "SELECT count(*) AS n FROM latest_memories", "--root",
                    tmp_path / "snaps", "--format", "csv")  # fmt: skip
    assert count.returncode == 0 and count.stdout.split() == ["n", "1001"], count


def test_an_old_copy_of_the_state_home_restored_after_the_run_finished_sends_nothing(
    tmp_path: Path,
) -> None:
    """The state home is copied mid-migration (a backup of ~/.local/state), the migration then
    finishes, and the old copy is put back: its journal says hundreds are still to send while the
    target holds them all. The re-run reconciles against the target first and sends nothing."""
    import shutil

    home = Path(os.environ["LONGMEM_ETL_HOME"])
    db, full, _ = _two_backups(tmp_path)
    target = tmp_path / "dst.db"
    mig = ["migrate", "--source", full, "--target", f"local:{target}?latency_ms=40&seed=2",
           "--concurrency", "1", "--chunk-size", "20", "--json"]  # fmt: skip
    proc = start_cli(*mig, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _done(home) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "finished before the copy"
    proc.send_signal(signal.SIGSTOP)
    try:
        shutil.copytree(home, tmp_path / "home-backup")  # journal + WAL, locks, frozen state
    finally:
        proc.send_signal(signal.SIGCONT)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    _held_once(stored_memories(target), 1000)
    old_done = _done(tmp_path / "home-backup")
    assert 100 <= old_done < 1000
    shutil.rmtree(home)
    shutil.copytree(tmp_path / "home-backup", home)
    again = run_cli(*mig)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["verification"]["exact"] is True
    assert out["resumed"] is True and out["upload"]["items_sent"] == 0
    _held_once(stored_memories(target), 1000)


def _limited(limit: int):
    """A child's file size limit (RLIMIT_FSIZE): a write past it fails with EFBIG, the real error a
    full disk gives, without needing a tiny filesystem."""
    import resource

    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def _run_limited(args: list, limit: int, cwd: Path) -> subprocess.CompletedProcess:
    proc = start_cli(*args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                     preexec_fn=_limited(limit))  # fmt: skip
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def _case(name: str, tmp_path: Path) -> tuple[list, Path, int]:
    """(arguments, the directory or file the verb writes, a limit it cannot fit in)."""
    from longmem_etl.cli.main import main

    db, root = tmp_path / "acct.db", tmp_path / "snaps"
    assert main(["local", "seed", f"local:{db}", "--from", str(SAMPLES / "globex-dirty.json")]) == 0
    assert main(["convert", str(SAMPLES / "globex-dirty.json"), "--root", str(root)]) == 0
    (snap,) = list_snapshots(root)
    if name == "backup":
        return ["backup", "--source", f"local:{db}", "--root", root], root, 40_000
    if name == "backup-increment":
        store = LocalStore(db)
        store.add("one more", collection="default")
        store.close()
        return ["backup", "--source", f"local:{db}", "--root", root], root, 60_000
    if name == "backup-encrypted":
        assert main(["keygen", "--out", str(tmp_path / "id.txt")]) == 0
        (rcpt,) = [w for w in (tmp_path / "id.txt").read_text().split() if w.startswith("age1")]
        args = ["backup", "--source", f"local:{db}", "--root", root, "--encrypt-to", rcpt]
        return [*args, "--full"], root, 60_000
    if name == "convert":
        return ["convert", SAMPLES / "acme.json", "--root", root], root, 40_000
    if name == "clean":
        spec = SAMPLES / "specs" / "migration-hygiene.toml"
        # --full: an increment against the source is now small enough to fit under the limit
        return ["clean", snap, "--spec", spec, "--root", root, "--full"], root, 40_000
    if name == "dump":
        return ["dump", snap, "--out", tmp_path / "out" / "d.json.gz"], tmp_path / "out", 40_000
    if name == "publish":
        cat = f"sqlite:///{tmp_path / 'catalog.db'}"
        return (
            ["publish", "--root", root, "--catalog", cat, "--warehouse", tmp_path / "wh"],
            (tmp_path / "wh"),
            30_000,
        )
    assert name == "migrate"
    home = Path(os.environ["LONGMEM_ETL_HOME"])
    return ["migrate", "--source", snap, "--target", f"local:{tmp_path / 'dst.db'}"], home, 100_000


@pytest.mark.parametrize(
    "verb",
    [
        "backup",
        "backup-increment",
        "backup-encrypted",
        "convert",
        "clean",
        "dump",
        "migrate",
        "publish",
    ],
)
def test_disk_full_is_one_line_exit_2_nothing_half_written_and_the_rerun_works(
    tmp_path: Path, verb: str
) -> None:
    args, written, limit = _case(verb, tmp_path)
    (tmp_path / "out").mkdir(exist_ok=True)
    before = _tree(written)
    failed = _run_limited(args, limit, tmp_path)
    assert failed.returncode == 2, failed.stderr
    (line,) = failed.stderr.strip().splitlines()
    assert "no space left" in line and "Traceback" not in line and "?:" not in line, line
    if verb == "migrate":  # the journal's dir stays (it is resumed); no target memory half-sent
        assert not (tmp_path / "dst.db").exists() or stored_memories(tmp_path / "dst.db") == []
    elif verb == "publish":  # an Iceberg commit is atomic: appended whole or not at all
        assert "--warehouse" in line
    else:
        assert _tree(written) == before  # no temp dir, no partial snapshot or file
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    if verb == "migrate":
        _held_once(stored_memories(tmp_path / "dst.db"), 1000)
    elif verb == "dump":
        assert (tmp_path / "out" / "d.json.gz").stat().st_size > 0
    elif verb == "publish":  # each table holds the snapshot once
        from longmem_etl.lakehouse.catalog import open_catalog

        cat = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}", str(tmp_path / "wh"))
        table = cat.load_table("longmem.memories")
        assert table.scan().to_arrow().num_rows == 1000 and len(table.metadata.snapshots) == 1
    else:
        assert len(_tree(written)) > len(before)


def test_an_increment_whose_parent_name_now_holds_another_snapshot_is_refused(
    tmp_path: Path,
) -> None:
    """The root is put back together from two copies: the increment's parent name now holds a
    different (valid) snapshot. Readers exit 2 naming the link instead of composing the increment
    on the wrong base, and the next backup writes a full snapshot, not an increment on it."""
    import shutil

    from longmem_etl.snapshots.manifest import read_manifest, write_manifest

    db, full, inc = _two_backups(tmp_path)
    other = tmp_path / "other"  # another copy of the tenant: a later full backup
    store = LocalStore(db)
    store.add("yet another", collection="default")
    store.close()
    assert run_cli("backup", "--source", f"local:{db}", "--root", other, "--full").returncode == 0
    (later,) = list_snapshots(other)
    shutil.rmtree(full)
    shutil.copytree(later, full)
    manifest = read_manifest(full)
    manifest["snapshot"] = full.name  # a valid snapshot under the parent's name
    write_manifest(full, manifest)
    root = tmp_path / "snaps"
    for args in (
        ["sql", "SELECT count(*) FROM latest_memories", "--root", root],
        ["dump", inc, "--out", tmp_path / "d.json"],
        ["restore", inc, "--target", f"local:{tmp_path / 'r.db'}"],
    ):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        (line,) = r.stderr.strip().splitlines()
        assert "was written against" in line and inc.name in line, line
    assert not (tmp_path / "d.json").exists() and not (tmp_path / "r.db").exists()
    time.sleep(1.05)
    assert run_cli("backup", "--source", f"local:{db}", "--root", root).returncode == 0
    newest = list_snapshots(root)[-1]
    assert newest not in (full, inc) and "incremental" not in read_manifest(newest)
    check = run_cli("check", "--root", root)
    assert check.returncode == 3 and inc.name in check.stdout + check.stderr


def test_a_killed_dump_leaves_a_temp_file_the_next_dump_removes(tmp_path: Path) -> None:
    """SIGKILL while ``dump --out`` writes: the output name never holds a partial file; the temp
    file beside it (tagged, unlocked) is removed by the next dump of that name, while a temp file a
    running dump holds (its lock) and files not ours are left alone."""
    import fcntl

    from longmem_etl.cli.main import main

    rows = [{"id": f"m{i}", "text": f"memory {i} " + "x" * 200} for i in range(40_000)]
    dump = tmp_path / "big.jsonl"
    dump.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["convert", str(dump), "--root", str(tmp_path / "snaps"), "--tenant", "t"]) == 0
    (snap,) = list_snapshots(tmp_path / "snaps")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "d.json.gz"
    for _ in range(5):  # catch it mid-write (the temp file exists only while it writes)
        proc = start_cli("dump", snap, "--out", out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while proc.poll() is None and not list(out_dir.glob(".d.json.gz.*.tmp")):
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL and list(out_dir.glob(".d.json.gz.*.tmp")):
            break
        out.unlink(missing_ok=True)
    (dead,) = out_dir.glob(".d.json.gz.*.tmp")
    assert not out.exists()
    running = out_dir / ".d.json.gz.longmem-etl-running1.tmp"
    running.write_bytes(b"partial")
    mine = out_dir / ".d.json.gz.mine.tmp"  # not tagged: never ours
    mine.write_bytes(b"user's")
    held = os.open(running, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # a dump still writing holds its temp file's lock
    try:
        r = run_cli("dump", snap, "--out", out, "--json")
    finally:
        os.close(held)
    assert r.returncode == 0, r.stderr
    assert not dead.exists() and running.exists() and mine.read_bytes() == b"user's"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([out.name, running.name, mine.name])


def test_forget_waits_while_an_increment_is_being_written_on_its_parent(tmp_path: Path) -> None:
    """A backup storing an increment holds the tenant's lock from choosing the parent to its commit
    (held here by the test, as that backup would). A forget that would remove the parent waits
    for it instead of breaking the chain being written, then applies its policy."""
    from longmem_etl.snapshots.layout import tenant_lock

    db, full, inc = _two_backups(tmp_path)
    root = tmp_path / "snaps"
    with tenant_lock(root, "globex"):
        proc = start_cli("forget", "--root", root, "--keep-last", "1", "--json",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(1.5)
        assert proc.poll() is None and (full / "manifest.json").is_file()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["removed"] == [str(full)]
    count = run_cli("sql", "SELECT count(*) AS n FROM latest_memories", "--root", root,
                    "--format", "csv")  # fmt: skip
    assert count.returncode == 0 and count.stdout.split() == ["n", "1001"], count


def test_the_same_convert_three_times_at_once_gives_one_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "snaps"
    args = ["convert", SAMPLES / "acme.json", "--root", root, "--json"]
    procs = [start_cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    paths = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        paths.add(json.loads(out)["path"])
    (snap,) = list_snapshots(root)
    assert paths == {str(snap)} and sorted(p.name for p in root.iterdir()) == ["tenant=acme"]

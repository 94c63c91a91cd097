"""Backups: seed -> backup -> dump round trip, paged == one-call, verification against the source,
retention, atomicity under failures and kills, bad input, and keys never written anywhere."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_support import run_cli, start_cli

from longmem_etl import jsonio
from longmem_etl.api.endpoints import endpoint_identity, open_endpoint
from longmem_etl.api.local import LocalStore
from longmem_etl.backup import backup, backup_from, clean_stale_temps
from longmem_etl.cli.main import main
from longmem_etl.dumps.compare import dump_differences, memory_differences
from longmem_etl.errors import APIError, Incomplete
from longmem_etl.snapshots import list_snapshots, open_snapshot
from longmem_etl.snapshots.diff import diff_snapshots
from longmem_etl.snapshots.dump import write_dump
from longmem_etl.snapshots.temps import owned

SAMPLES = Path(__file__).resolve().parent.parent / "longmem_etl" / "sample_data"
FAKE_SDK = Path(__file__).resolve().parent / "fake_sdk"
DIRTY = SAMPLES / "globex-dirty.json"
KEY = "lm_live_TOPSECRET_b4ckup_k3y_9f8e7d"


def _seed(tmp_path: Path, dump: Path = DIRTY, name: str = "src.db") -> str:
    uri = f"local:{tmp_path / name}"
    assert main(["local", "seed", uri, "--from", str(dump)]) == 0
    return uri


def _mem_by_id(memories):
    return {m["id"]: m for m in memories}


def test_seed_backup_dump_gives_back_the_seeded_dump(tmp_path, capsys):
    uri = _seed(tmp_path)
    capsys.readouterr()
    assert main(["backup", "--source", uri, "--root", str(tmp_path / "snaps"), "--json"]) == 0
    out = jsonio.loads(capsys.readouterr().out)
    snap = Path(out["path"])
    assert out["memories"] == 1000 and out["rejected"] == 0
    assert out["verification"]["health_checked_collections"] >= 5
    write_dump(snap, tmp_path / "back.json")
    original = jsonio.loads(DIRTY.read_bytes())
    assert dump_differences(original, jsonio.loads((tmp_path / "back.json").read_bytes())) == []


def test_paged_and_one_call_backups_agree(tmp_path):
    uri = _seed(tmp_path)
    root = tmp_path / "snaps"
    one = backup(uri, root, tenant="g1")
    paged = backup(uri, root, tenant="g2", paged=True, page_size=37)
    assert (one.memories, paged.memories) == (1000, 1000)
    assert paged.verification["duplicate_ids"] == 0
    assert diff_snapshots(one.path, paged.path).identical
    a = _mem_by_id(m for b in open_snapshot(one.path).iter_dump_memories() for m in b)
    b = _mem_by_id(m for b in open_snapshot(paged.path).iter_dump_memories() for m in b)
    assert a.keys() == b.keys()
    assert all(memory_differences(a[i], b[i]) == [] for i in a)
    names = lambda cols: [c if isinstance(c, str) else c["name"] for c in cols]  # noqa: E731
    assert names(open_snapshot(one.path).collections()) == names(
        open_snapshot(paged.path).collections()
    )


def test_keep_prunes_older_snapshots_of_that_tenant_only(tmp_path):
    uri = _seed(tmp_path, SAMPLES / "acme-small.json")
    other = _seed(tmp_path, SAMPLES / "globex-dirty.json", "other.db")
    root = tmp_path / "snaps"
    backup(other, root)
    made = [backup(uri, root).path for _ in range(3)]
    stray = root / ".tmp-someone-elses-writer"
    stray.mkdir()
    r = backup(uri, root, keep=2)
    left = list_snapshots(root, "acme")
    assert left == [made[2], r.path]
    assert sorted(r.pruned) == sorted(str(p) for p in made[:2])
    assert len(list_snapshots(root, "globex")) == 1
    assert stray.is_dir()  # young and ownerless: maybe someone is writing it


def test_changing_account_during_paging_fails_and_writes_nothing(tmp_path):
    store = LocalStore(tmp_path / "s.db")
    for i in range(5):
        store.add_many([f"m{i} {j}" for j in range(20)], collection="c")

    class InsertsWhilePaging:
        """The real store, with another client adding a memory after each page is served."""

        def __getattr__(self, name):
            return getattr(store, name)

        def list_memories(self, **kw):
            page = store.list_memories(**kw)
            store.add("a new memory arrives", collection="c")
            return page

    with pytest.raises(Incomplete, match="twice"):
        backup_from(
            InsertsWhilePaging(),
            tmp_path / "snaps",
            source={"kind": "test"},
            paged=True,
            page_size=10,
        )
    assert list_snapshots(tmp_path / "snaps") == []
    assert list((tmp_path / "snaps").iterdir()) == []

    class DeletesWhilePaging:
        def __getattr__(self, name):
            return getattr(store, name)

        def list_memories(self, **kw):
            page = store.list_memories(**kw)
            if page and kw["offset"] == 0:
                store.delete(page[0]["id"], collection="c")
            return page

    with pytest.raises(Incomplete, match="disagree with the source's counts"):
        backup_from(
            DeletesWhilePaging(),
            tmp_path / "snaps",
            source={"kind": "test"},
            paged=True,
            page_size=10,
        )
    assert list((tmp_path / "snaps").iterdir()) == []


def test_export_disagreeing_with_health_is_not_written(tmp_path):
    store = LocalStore(tmp_path / "s.db")
    store.add_many(["a", "b", "c"], collection="c")

    class LosesOneInExport:
        def __getattr__(self, name):
            return getattr(store, name)

        def export_account(self):
            d = store.export_account()
            d["memories"] = d["memories"][1:]
            return d

    with pytest.raises(Incomplete, match="disagrees with the source's counts"):
        backup_from(LosesOneInExport(), tmp_path / "snaps", source={"kind": "test"})
    assert list_snapshots(tmp_path / "snaps") == []


def test_transient_faults_are_retried_and_persistent_ones_leave_nothing(tmp_path, monkeypatch):
    # the module by name: the package attribute longmem_etl.backup is the public function
    monkeypatch.setattr(importlib.import_module("longmem_etl.backup"), "BACKOFF_BASE_S", 0.001)
    uri = _seed(tmp_path, SAMPLES / "acme-small.json")
    flaky = backup(uri + "?fail_rate=0.3&seed=3", tmp_path / "snaps", paged=True, page_size=5)
    assert flaky.memories == 50
    with pytest.raises(APIError) as ei:
        backup(uri + "?fail_rate=1", tmp_path / "snaps2", paged=True)
    assert ei.value.status == 503
    assert not (tmp_path / "snaps2").exists() or list((tmp_path / "snaps2").iterdir()) == []


def test_killed_backup_leaves_no_snapshot_and_next_run_cleans_up(tmp_path):
    uri = _seed(tmp_path, SAMPLES / "acme.json")
    root = tmp_path / "snaps"
    proc = start_cli(
        "backup", "--source", uri + "?latency_ms=20", "--root", str(root), "--paged",
        "--page-size", "10",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(root.glob(".tmp-*/.owner")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # mid-paging: 2,000 memories at 10 a page take >= 200 x 20 ms
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    temps = list(root.glob(".tmp-*"))
    assert len(temps) == 1 and (temps[0] / ".owner").exists()
    assert list_snapshots(root) == []
    assert not list(root.glob("tenant=*/snapshot=*"))
    r = backup(uri, root)
    assert r.cleaned_temps == [temps[0].name]
    assert not list(root.glob(".tmp-*"))
    assert list_snapshots(root) == [r.path]


def test_clean_stale_temps_keeps_live_writers(tmp_path):
    live = tmp_path / ".tmp-live"
    live.mkdir()
    with owned(live):
        assert clean_stale_temps(tmp_path) == []
        assert live.is_dir()
    # released: the marker is gone with the lock, so the dir is no longer provably ours
    assert clean_stale_temps(tmp_path) == [] and live.is_dir()
    # an unmarked dir is never ours to remove, however old (a user's build cache, say)
    old = tmp_path / ".tmp-old"
    old.mkdir()
    (old / ".owner").write_text("not our marker\n")
    os.utime(old, (time.time() - 7 * 24 * 3600,) * 2)
    assert clean_stale_temps(tmp_path) == [] and old.is_dir()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--source", "ftp://x"], "unknown URI scheme 'ftp'"),
        (["--source", "local:{tmp}/missing.db"], "no such local store"),
        (["--source", "{samples}/acme.json"], "longmem-etl convert"),
        (
            ["--source", "https://longmem.example", "--source-key-env", "UNSET_KEY_VAR_X"],
            "UNSET_KEY_VAR_X is not set",
        ),
        (["--source", "local:{tmp}/src.db", "--keep", "0"], "--keep must be at least 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.delenv("UNSET_KEY_VAR_X", raising=False)
    _seed(tmp_path, SAMPLES / "acme-small.json")
    capsys.readouterr()
    argv = [a.format(tmp=tmp_path, samples=SAMPLES) for a in argv]
    assert main(["backup", *argv, "--root", str(tmp_path / "snaps")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "missing.db").exists()
    assert list_snapshots(tmp_path / "snaps") == []


def test_locked_source_exits_2(tmp_path, capsys):
    uri = _seed(tmp_path, SAMPLES / "acme-small.json")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('PRAGMA locking_mode=EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE'); "
            "c.execute('insert into meta values (\"lock\", \"1\")'); print('locked', flush=True); "
            "time.sleep(60)",
            str(tmp_path / "src.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert main(["backup", "--source", uri, "--root", str(tmp_path / "snaps")]) == 2
        assert "locked by another process" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_key_never_appears_in_output_or_files(tmp_path):
    server = f"local:{tmp_path / 'server.db'}"
    LocalStore(tmp_path / "server.db").seed_dump(
        jsonio.loads((SAMPLES / "acme-small.json").read_bytes())
    )
    env = {"ACME_KEY": KEY, "FAKE_LONGMEM_BACKEND": server}
    root = tmp_path / "snaps"
    outputs = []
    for extra in ([], ["--paged", "--tenant", "acme"]):
        p = run_cli(
            "backup", "--source", "https://longmem.example", "--source-key-env", "ACME_KEY",
            "--root", str(root), "--json", *extra,
            env=env, pythonpath=[FAKE_SDK],
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        outputs.append(p.stdout + p.stderr)
    snaps = list_snapshots(root)
    assert len(snaps) == 2
    files = [f for f in root.rglob("*") if f.is_file()]
    assert len(files) >= 6
    for blob in [*(f.read_bytes() for f in files), *(o.encode() for o in outputs)]:
        assert KEY.encode() not in blob
        assert KEY[8:20].encode() not in blob  # not even a fragment
    manifest = open_snapshot(snaps[0]).manifest
    os.environ["ACME_KEY_T"] = KEY
    try:
        fp = endpoint_identity("https://longmem.example", "ACME_KEY_T")["key_fingerprint"]
    finally:
        del os.environ["ACME_KEY_T"]
    assert manifest["source"]["key_fingerprint"] == fp
    assert manifest["source"]["base_url"] == "https://longmem.example"


def test_seed_cli_bad_dump_writes_no_store(tmp_path, capsys):
    bad = SAMPLES / "bad" / "truncated.json"
    assert main(["local", "seed", f"local:{tmp_path}/x.db", "--from", str(bad)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "x.db").exists()
    assert (
        main(["local", "seed", f"local:{tmp_path}/x.db", "--from", str(tmp_path / "nope.json")])
        == 2
    )
    assert not (tmp_path / "x.db").exists()


def test_seed_refuses_non_empty_store_unless_replace(tmp_path, capsys):
    uri = _seed(tmp_path, SAMPLES / "acme-small.json")
    assert main(["local", "seed", uri, "--from", str(DIRTY)]) == 2
    assert "already holds data" in capsys.readouterr().err
    assert main(["local", "seed", uri, "--from", str(DIRTY), "--replace", "--json"]) == 0
    assert open_endpoint(uri).export_account()["tenant"]["id"] == "globex"


def test_one_call_retries_when_the_account_moved_between_export_and_health(tmp_path):
    store = LocalStore(tmp_path / "s.db")
    store.add_many(["a", "b"], collection="c")
    calls = []

    class WriterBetweenCalls:
        """Another client adds a memory right after the first export is served."""

        def __getattr__(self, name):
            return getattr(store, name)

        def export_account(self):
            d = store.export_account()
            calls.append(len(d["memories"]))
            if len(calls) == 1:
                store.add("late arrival", collection="c")
            return d

    r = backup_from(WriterBetweenCalls(), tmp_path / "snaps", source={"kind": "test"})
    assert calls == [2, 3] and r.memories == 3

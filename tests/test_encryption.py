"""Encryption at rest (age via pyrage): keygen, encrypted backup/convert/clean, readers with and
without the identity, nothing readable in the files, private temp copies removed afterwards."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pyrage
import pytest
from cli_support import run_cli

from longmem_etl.api.local import LocalStore
from longmem_etl.cli.main import main
from longmem_etl.dumps.compare import dump_differences
from longmem_etl.snapshots import list_snapshots

SAMPLES = Path(__file__).resolve().parent.parent / "longmem_etl" / "sample_data"


def _cli(args: list[str], env: dict[str, str] | None = None, tmpdir: Path | None = None):
    """The CLI; with ``tmpdir`` as its TMPDIR (to see that decrypted copies do not stay there)."""
    return run_cli(*args, env={**({"TMPDIR": str(tmpdir)} if tmpdir else {}), **(env or {})})


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    """A seeded store, a key, and an encrypted backup of the store."""
    tmp = tmp_path_factory.mktemp("enc")
    db = tmp / "acct.db"
    assert main(["local", "seed", f"local:{db}", "--from", str(SAMPLES / "acme-small.json")]) == 0
    key = tmp / "acme.key"
    r = _cli(["keygen", "--out", str(key)])
    assert r.returncode == 0, r.stderr
    recipient = r.stdout.strip()
    assert recipient.startswith("age1")
    root = tmp / "snaps"
    r = _cli(["backup", "--source", f"local:{db}", "--root", str(root), "--encrypt-to", recipient])
    assert r.returncode == 0, r.stderr
    (snap,) = list_snapshots(root)
    store = LocalStore(db, create=False)
    try:
        export = store.export_account()
    finally:
        store.close()
    return {"tmp": tmp, "db": db, "key": key, "recipient": recipient, "root": root, "snap": snap,
            "export": export}  # fmt: skip


def test_keygen_is_private_and_never_overwrites(tmp_path):
    key = tmp_path / "k"
    r = _cli(["keygen", "--out", str(key), "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recipient"].startswith("age1")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    assert b"AGE-SECRET-KEY-1" in before
    again = _cli(["keygen", "--out", str(key)])
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert key.read_bytes() == before


def _shares_a_window(plain: bytes, data: bytes, width: int = 16) -> bool:
    """Whether any ``width``-byte run of ``plain`` occurs in ``data`` (by chance: ~2**-128 each)."""
    windows = {data[i : i + width] for i in range(len(data) - width + 1)}
    return any(plain[i : i + width] in windows for i in range(len(plain) - width + 1))


def test_nothing_is_readable_without_the_identity(enc):
    snap = enc["snap"]
    names = sorted(p.name for p in snap.iterdir())
    assert names == [
        "collections.parquet.age",
        "manifest.full.json.age",
        "manifest.json",
        "memories.parquet.age",
        "memory_hashes.parquet.age",  # digests of content are sealed like the content
    ]
    assert not (snap / "memories.parquet").exists()  # no Parquet reader mistakes it for data
    texts = [m["text"] for m in enc["export"]["memories"]]
    colls = sorted({m["collection"] for m in enc["export"]["memories"]})
    # Only strings of 8+ bytes are looked for: ciphertext (and age's base64 header) is random, so
    # a 3-byte name like "crm" turns up by chance in ~0.4% of encryptions (the old flake).
    # Shorter names are covered by the window check below, which is exact and cannot flake.
    needles = [t.encode() for t in texts[:20] + colls if len(t.encode()) >= 8]
    assert len(needles) >= 20
    identity = pyrage.x25519.Identity.from_str(
        next(ln for ln in enc["key"].read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-"))
    )
    for f in snap.iterdir():
        data = f.read_bytes()
        for t in needles:
            assert t not in data, (f.name, t)
        if f.name != "manifest.json":
            assert data.startswith(b"age-encryption.org/v1")
            plain = pyrage.decrypt(data, [identity])
            assert not _shares_a_window(plain, data), f.name  # no 16-byte run of plaintext
            with pytest.raises(pa.ArrowInvalid):
                pq.read_table(f)
            with pytest.raises(duckdb.Error):
                duckdb.connect().execute(f"SELECT * FROM read_parquet('{f}')").fetchall()
    public = json.loads((snap / "manifest.json").read_text())
    assert set(public) == {"format_version", "tool", "tenant", "snapshot", "counts", "files",
                           "encryption", "manifest_sha256"}  # fmt: skip
    assert public["counts"]["memories"] == len(texts)


def test_readers_without_or_with_a_wrong_identity_exit_2(enc, tmp_path):
    snap, root = enc["snap"], enc["root"]
    other = tmp_path / "other.key"
    assert _cli(["keygen", "--out", str(other)]).returncode == 0
    cases = [
        ["sql", "--root", str(root), "SELECT count(*) FROM memories"],
        ["dump", str(snap), "--out", str(tmp_path / "d.json")],
        ["restore", str(snap), "--target", f"local:{tmp_path / 'new.db'}", "--dry-run"],
        ["diff", str(snap), str(snap)],
    ]
    for args in cases:
        for env in ({}, {"LONGMEM_ETL_IDENTITY_FILE": str(other)}):
            r = _cli(args, env=env, tmpdir=tmp_path)
            assert r.returncode == 2, (args, env, r.stderr)
            assert str(snap.name) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d.json").exists()
    assert not list(tmp_path.glob("longmem-etl-plain-*"))


def test_sql_dump_diff_restore_with_the_identity(enc, tmp_path):
    snap, root, key = enc["snap"], enc["root"], enc["key"]
    env = {"LONGMEM_ETL_IDENTITY_FILE": str(key)}
    r = _cli(
        ["sql", "--root", str(root), "--format", "json",
         "SELECT count(*) AS n, count(DISTINCT collection) AS c FROM latest_memories"],
        env=env, tmpdir=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert '"n": 50' in r.stdout.replace(" ", " ")
    out = tmp_path / "d.json"
    r = _cli(["dump", str(snap), "--out", str(out), "--identity", str(key)], tmpdir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert dump_differences(enc["export"], json.loads(out.read_text())) == []
    r = _cli(["diff", str(snap), str(snap), "--json"], env=env, tmpdir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["unchanged"] == 50
    target = tmp_path / "new.db"
    r = _cli(["restore", str(snap), "--target", f"local:{target}"], env=env, tmpdir=tmp_path)
    assert r.returncode == 0, r.stderr
    store = LocalStore(target, create=False)
    try:
        restored = store.export_account()["memories"]
    finally:
        store.close()
    assert sorted(m["text"] for m in restored) == sorted(
        m["text"] for m in enc["export"]["memories"]
    )
    assert not list(tmp_path.glob("longmem-etl-plain-*"))  # decrypted copies removed


def test_clean_and_convert_encrypt_through_the_environment(enc, tmp_path):
    key, snap = enc["key"], enc["snap"]
    spec = tmp_path / "spec.toml"
    spec.write_text('[[steps]]\nkind = "drop_archived"\n')
    env = {"LONGMEM_ETL_IDENTITY_FILE": str(key), "LONGMEM_ETL_RECIPIENTS": enc["recipient"]}
    out_root = tmp_path / "clean"
    r = _cli(["clean", str(snap), "--spec", str(spec), "--root", str(out_root)], env=env)
    assert r.returncode == 0, r.stderr
    (cleaned,) = list_snapshots(out_root)
    assert (cleaned / "memories.parquet.age").is_file()
    assert "transform" not in json.loads((cleaned / "manifest.json").read_text())
    conv = tmp_path / "conv"
    r = _cli(["convert", str(SAMPLES / "acme-small.json"), "--root", str(conv)], env=env)
    assert r.returncode == 0, r.stderr
    (converted,) = list_snapshots(conv)
    assert (converted / "memories.parquet.age").is_file()
    r = _cli(["sql", "--root", str(conv), "SELECT count(*) FROM collections"], env=env)
    assert r.returncode == 0 and "6" in r.stdout, r.stderr


def test_bad_recipient_writes_nothing(tmp_path):
    root = tmp_path / "snaps"
    r = _cli(["convert", str(SAMPLES / "acme-small.json"), "--root", str(root),
              "--encrypt-to", "age1notakey"])  # fmt: skip
    assert r.returncode == 2 and "age1notakey" in r.stderr
    assert list_snapshots(root) == []


def test_forget_and_integrity_work_without_the_identity(enc, tmp_path):
    import shutil

    root = tmp_path / "snaps"
    shutil.copytree(enc["root"], root)
    r = _cli(["forget", "--root", str(root), "--keep-last", "1", "--json"])
    assert r.returncode == 0, r.stderr
    assert list_snapshots(root) == [root / enc["snap"].relative_to(enc["root"])]


def test_ctrl_c_removes_the_decrypted_copy(enc, tmp_path):
    code = (
        "import os, signal, sys\n"
        "from longmem_etl.snapshots.crypto import plain_dir\n"
        f"d = plain_dir({str(enc['snap'])!r})\n"
        "assert (d / 'memories.parquet').is_file()\n"
        "print(d, oct(d.parent.parent.stat().st_mode & 0o777), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "import time; time.sleep(5)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path), "LONGMEM_ETL_IDENTITY_FILE": str(enc["key"])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "KeyboardInterrupt" in r.stderr
    where, mode = r.stdout.split()
    plain = Path(where)
    assert plain.is_relative_to(tmp_path) and mode == "0o700"
    assert not plain.exists() and not list(tmp_path.glob("longmem-etl-plain-*"))


def test_dagster_graph_over_encrypted_snapshots(etl_state, tmp_path, monkeypatch):
    """The whole Dagster graph with recipients configured: every check passes, nothing in clear."""
    from dagster import DagsterInstance, materialize

    from longmem_etl.snapshots.crypto import write_identity_file
    from pipelines.definitions import ASSETS, CHECKS
    from pipelines.partitions import register_tenants
    from pipelines.resources import SnapshotRoot, default_resources

    state = etl_state
    key = tmp_path / "acme.key"
    recipient = write_identity_file(key)
    monkeypatch.setenv("LONGMEM_ETL_IDENTITY_FILE", str(key))
    resources = default_resources()
    for name in ("snapshot_root", "clean_root"):
        resources[name] = SnapshotRoot(
            path=resources[name].path, encrypt_to_by_tenant={"acme": [recipient]}
        )
    assert resources["snapshot_root"].recipients("globex") == []  # only acme is encrypted
    instance = DagsterInstance.ephemeral()
    register_tenants(instance)
    result = materialize(
        [*ASSETS, *CHECKS],
        partition_key="acme",
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals and all(evals.values()), evals
    for root in (state / "snapshots", state / "clean"):
        snaps = list_snapshots(root, "acme")
        assert snaps and all((s / "memories.parquet.age").is_file() for s in snaps)
        assert not list(root.rglob("*.parquet"))
    dumps = list((state / "dumps").rglob("*"))
    assert [p.name.endswith(".json.zst.age") for p in dumps if p.is_file()] == [True]

"""s3:// roots against a real S3-compatible server on 127.0.0.1 (moto in server mode, tests/s3_support.py).

Every verb runs as a child process configured only by the standard AWS environment, as a user's
would be: round trips, SQL equal to a local copy, a SIGKILLed upload, retention, encrypted
increments, migrate from an S3 snapshot, bad buckets and endpoints, and credentials never written
or printed anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from s3_support import ACCESS_KEY, SECRET_KEY

from longmem_etl.api.local import LocalStore
from longmem_etl.cli.main import main
from longmem_etl.dumps.compare import dump_differences

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "longmem_etl" / "sample_data"
_CAPFD: pytest.CaptureFixture[str]
_MONKEY: pytest.MonkeyPatch


@pytest.fixture(autouse=True)
def _capture(capfd, monkeypatch):
    global _CAPFD, _MONKEY
    _CAPFD, _MONKEY = capfd, monkeypatch
    for name in [k for k in os.environ if k.startswith("LONGMEM_ETL_")]:
        monkeypatch.delenv(name)
    yield


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (imports paid once; the SIGKILL test uses a real child): exit
    code, stdout and stderr, with ``env`` set for this call only."""
    _CAPFD.readouterr()
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        code = main(list(args))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out, err = _CAPFD.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def _ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stderr
    return r


def _snapshot_keys(keys: list[str]) -> set[str]:
    return {k.rsplit("/", 1)[0] for k in keys if k.endswith("/manifest.json")}


def test_dump_to_s3_snapshot_to_dump_is_lossless(s3, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/backups"
    r = _ok(_cli("convert", str(SAMPLES / "acme-small.json"), "--root", root, "--json"))
    path = json.loads(r.stdout)["path"]
    assert path.startswith(root + "/tenant=acme/snapshot=")
    keys = s3.keys(s3_bucket)
    assert {k.rsplit("/", 1)[1] for k in keys} == {
        "manifest.json",
        "memories.parquet",
        "memory_hashes.parquet",
        "collections.parquet",
    }
    out = tmp_path / "back.json"
    _ok(_cli("dump", path, "--out", str(out)))
    original = json.loads((SAMPLES / "acme-small.json").read_text())
    assert dump_differences(original, json.loads(out.read_text())) == []
    # the same dump again: recognised by its sha256 in the S3 manifest, nothing new uploaded
    again = _ok(_cli("convert", str(SAMPLES / "acme-small.json"), "--root", root, "--json"))
    assert json.loads(again.stdout)["already_present"] is True
    assert sorted(s3.keys(s3_bucket)) == sorted(keys)
    # diff of the S3 snapshot with itself, and check of the root
    d = _ok(_cli("diff", path, path, "--json"))
    assert json.loads(d.stdout)["changed"] == 0
    c = _ok(_cli("check", "--root", root, "--read-data", "--json"))
    assert json.loads(c.stdout)["healthy"] is True


def test_sql_over_s3_equals_sql_over_a_local_copy(s3, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/wh"
    local = tmp_path / "local"
    for dump in ("acme-small.json", "globex-dirty.json"):
        _ok(_cli("convert", str(SAMPLES / dump), "--root", root))
        _ok(_cli("convert", str(SAMPLES / dump), "--root", str(local)))
    queries = [
        "SELECT tenant, snapshot, count(*) AS n FROM memories GROUP BY ALL ORDER BY ALL",
        "SELECT tenant, collection, count(*) AS n, sum(length(text)) AS chars FROM latest_memories "
        "GROUP BY ALL ORDER BY ALL",
        "SELECT s.tenant, count(r.reason) FROM snapshots s LEFT JOIN rejected r USING (tenant, snapshot) "
        "GROUP BY ALL ORDER BY ALL",
        "SELECT tenant, snapshot, memories, rejected FROM snapshots ORDER BY ALL",
    ]
    for q in queries:
        a = _ok(_cli("sql", q, "--root", root, "--format", "csv")).stdout
        b = _ok(_cli("sql", q, "--root", str(local), "--format", "csv")).stdout
        assert a == b and len(a.splitlines()) > 1, q
    # paths name the bucket, never the private mirror
    paths = _ok(_cli("sql", "SELECT path FROM snapshots", "--root", root, "--format", "csv"))
    assert all(p.startswith(root + "/tenant=") for p in paths.stdout.splitlines()[1:])
    # the same read-only lockdown: no file outside the snapshots, no writes
    r = _cli("sql", f"SELECT * FROM read_text('{REPO / 'README.md'}')", "--root", root)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


_KILLER = r"""
import os, signal, sys
from longmem_etl.storage import store
real = store.Store.upload
def upload(self, src, key):
    real(self, src, key)
    if key.endswith("memories.parquet"):
        os.kill(os.getpid(), signal.SIGKILL)  # mid-upload: claim and a data file, no manifest
store.Store.upload = upload
from longmem_etl.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigkilled_upload_is_never_visible_and_is_cleaned(s3, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/r"
    dump = str(SAMPLES / "acme-small.json")
    r = subprocess.run(
        [sys.executable, "-c", _KILLER, "convert", dump, "--root", root],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == -9, r.stderr
    keys = s3.keys(s3_bucket)
    assert any(k.endswith("/memories.parquet") for k in keys)
    assert any(k.endswith("/.longmem-etl-upload.json") for k in keys)
    assert not any(k.endswith("/manifest.json") for k in keys)
    # readers see nothing
    q = _ok(_cli("sql", "SELECT count(*) FROM snapshots", "--root", root, "--format", "csv"))
    assert q.stdout.split()[-1] == "0"
    # check removes the abandoned upload (its owner is provably dead) and says so
    c = _ok(_cli("check", "--root", root, "--json"))
    debris = json.loads(c.stdout)["debris"]
    assert [(d["kind"], d["state"]) for d in debris] == [("upload", "removed")]
    assert s3.keys(s3_bucket) == []
    # killed again, then the next writer cleans up before it commits
    r = subprocess.run(
        [sys.executable, "-c", _KILLER, "convert", dump, "--root", root],
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == -9
    _ok(_cli("convert", str(SAMPLES / "globex-dirty.json"), "--root", root))
    keys = s3.keys(s3_bucket)
    assert not any("tenant=acme" in k for k in keys)
    assert len(_snapshot_keys(keys)) == 1 and not any(".longmem-etl-upload" in k for k in keys)


def _seeded(tmp_path: Path, dump: str = "acme-small.json") -> Path:
    db = tmp_path / "acct.db"
    assert main(["local", "seed", f"local:{db}", "--from", str(SAMPLES / dump)]) == 0
    return db


def _add(db: Path, texts: list[str]) -> None:
    store = LocalStore(db, create=False)
    try:
        store.add_many(texts, collection="later")
    finally:
        store.close()


def test_backup_retention_and_forget_on_s3(s3, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/b"
    db = _seeded(tmp_path)
    for i in range(3):
        _ok(_cli("backup", "--source", f"local:{db}", "--root", root, "--full"))
        _add(db, [f"new {i}"])
    assert len(_snapshot_keys(s3.keys(s3_bucket))) == 3
    r = _ok(_cli("forget", "--root", root, "--keep-last", "1", "--json"))
    assert len(json.loads(r.stdout)["removed"]) == 2
    keys = s3.keys(s3_bucket)
    assert len(_snapshot_keys(keys)) == 1
    assert len({k.rsplit("/", 1)[0] for k in keys}) == 1  # the removed ones' files are gone too
    # backup --keep on S3: the new snapshot lands before the old one goes
    _ok(_cli("backup", "--source", f"local:{db}", "--root", root, "--keep", "1", "--full"))
    keys = s3.keys(s3_bucket)
    assert len(_snapshot_keys(keys)) == 1
    out = tmp_path / "latest.json"
    (snap,) = _snapshot_keys(keys)
    _ok(_cli("dump", f"s3://{s3_bucket}/{snap}", "--out", str(out)))
    assert len(json.loads(out.read_text())["memories"]) == 53  # 50 + 3 added


def test_a_removal_cut_short_is_finished_and_foreign_objects_are_left(s3, s3_bucket):
    root = f"s3://{s3_bucket}/f"
    _ok(_cli("convert", str(SAMPLES / "acme-small.json"), "--root", root))
    (snap,) = _snapshot_keys(s3.keys(s3_bucket))
    client = s3.client()
    # a forget killed after the manifest went: the marker and the data files remain
    client.copy_object(
        Bucket=s3_bucket,
        Key=f"{snap}/.forgetting-manifest.json",
        CopySource={"Bucket": s3_bucket, "Key": f"{snap}/manifest.json"},
    )
    client.delete_object(Bucket=s3_bucket, Key=f"{snap}/manifest.json")
    client.put_object(
        Bucket=s3_bucket, Key="f/tenant=x/snapshot=20200101T000000Z/notes.txt", Body=b"x"
    )
    c = _ok(_cli("check", "--root", root, "--json"))
    states = sorted((d["kind"], d["state"]) for d in json.loads(c.stdout)["debris"])
    assert states == [("removal", "removed"), ("unknown", "foreign")]
    assert s3.keys(s3_bucket) == ["f/tenant=x/snapshot=20200101T000000Z/notes.txt"]


def test_encrypted_increment_on_s3(s3, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/enc"
    db = _seeded(tmp_path, "acme.json")
    key = tmp_path / "k"
    recipient = _ok(_cli("keygen", "--out", str(key))).stdout.strip()
    env = {"LONGMEM_ETL_RECIPIENTS": recipient, "LONGMEM_ETL_IDENTITY_FILE": str(key)}
    _ok(_cli("backup", "--source", f"local:{db}", "--root", root, env=env))
    _add(db, ["one more", "and another"])
    r = _ok(_cli("backup", "--source", f"local:{db}", "--root", root, "--json", env=env))
    second = json.loads(r.stdout)["path"]
    names = {
        k.rsplit("/", 1)[1]
        for k in s3.keys(s3_bucket)
        if k.startswith(second[len(f"s3://{s3_bucket}/") :])
    }
    assert "changed_memories.parquet.age" in names and "memories.parquet" not in names
    out = tmp_path / "d.json"
    _ok(_cli("dump", second, "--out", str(out), env=env))
    store = LocalStore(db, create=False)
    try:
        assert dump_differences(store.export_account(), json.loads(out.read_text())) == []
    finally:
        store.close()
    q = _ok(
        _cli(
            "sql",
            "SELECT count(*) FROM latest_memories",
            "--root",
            root,
            "--format",
            "csv",
            env=env,
        )
    )
    assert q.stdout.split()[-1] == str(len(json.loads(out.read_text())["memories"]))
    # without the identity the S3 snapshot cannot be read: exit 2 naming it (by its URL)
    r = _cli(
        "dump", second, "--out", str(tmp_path / "x.json"), env={"LONGMEM_ETL_RECIPIENTS": recipient}
    )
    assert (
        r.returncode == 2
        and second.rsplit("/", 1)[1] in r.stderr
        and "longmem-etl-s3-" not in r.stderr
    )


def test_migrate_and_restore_from_an_s3_snapshot(s3, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/m"
    r = _ok(_cli("convert", str(SAMPLES / "acme-small.json"), "--root", root, "--json"))
    snap = json.loads(r.stdout)["path"]
    target = tmp_path / "target.db"
    env = {"LONGMEM_ETL_HOME": str(tmp_path / "home")}
    m = _ok(_cli("migrate", "--source", snap, "--target", f"local:{target}", "--json", env=env))
    assert json.loads(m.stdout)["exit_code"] == 0
    store = LocalStore(target, create=False)
    try:
        assert len(store.export_account()["memories"]) == 50
    finally:
        store.close()
    # the same command again: the same migration (found by identity, not by the mirror's path)
    again = _ok(_cli("migrate", "--source", snap, "--target", f"local:{target}", "--json", env=env))
    assert json.loads(again.stdout)["migration_id"] == json.loads(m.stdout)["migration_id"]
    restored = tmp_path / "restored.db"
    _ok(_cli("restore", snap, "--target", f"local:{restored}", "--work-dir", str(tmp_path / "rw")))
    store = LocalStore(restored, create=False)
    try:
        assert len(store.export_account()["memories"]) == 50
    finally:
        store.close()


def test_bad_bucket_endpoint_and_url_exit_2_in_one_line(s3, s3_bucket, tmp_path):
    dump = str(SAMPLES / "acme-small.json")
    cases = [
        (("convert", dump, "--root", "s3://no-such-bucket-here/x"), {}, "no such bucket"),
        (("sql", "SELECT 1", "--root", "s3:///x"), {}, "missing bucket name"),
        (("check", "--root", "s3://Bad_Bucket/x"), {}, "not a valid bucket name"),
        (
            ("convert", dump, "--root", f"s3://{s3_bucket}/x"),
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
            "cannot reach",
        ),
        (
            (
                "dump",
                f"s3://{s3_bucket}/x/tenant=a/snapshot=20200101T000000Z",
                "--out",
                str(tmp_path / "o.json"),
            ),
            {},
            "s3://",
        ),
        (
            ("sql", "SELECT 1", "--root", f"s3://{ACCESS_KEY}:{SECRET_KEY}@{s3_bucket}/x"),
            {},
            "credentials in the URL",
        ),
    ]
    for args, env, words in cases:
        r = _cli(*args, env=env)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
        assert SECRET_KEY not in r.stderr and ACCESS_KEY not in r.stderr
    assert s3.keys(s3_bucket) == []


def test_credentials_are_never_written_or_printed(s3, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/c"
    db = _seeded(tmp_path)
    outputs = []
    for args in (
        ("backup", "--source", f"local:{db}", "--root", root, "--json"),
        ("convert", str(SAMPLES / "globex-dirty.json"), "--root", root, "--json"),
        ("sql", "SELECT * FROM snapshots", "--root", root, "--format", "json"),
        ("check", "--root", root, "--read-data", "--json"),
        ("forget", "--root", root, "--keep-last", "1", "--dry-run", "--json"),
    ):
        r = _ok(_cli(*args))
        outputs.append(r.stdout + r.stderr)
    for text in outputs:
        assert ACCESS_KEY not in text and SECRET_KEY not in text
    client = s3.client()
    keys = s3.keys(s3_bucket)
    assert len(keys) >= 5
    for key in keys:
        body = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert ACCESS_KEY.encode() not in body and SECRET_KEY.encode() not in body, key


def test_two_writers_at_once_never_share_a_prefix(s3, s3_bucket, tmp_path):
    """Two real processes convert different dumps named after the same instant into one S3 root at
    the same time: each either commits its own snapshot or stops with exit 2, and every snapshot
    readers see is whole."""
    original = json.loads((SAMPLES / "acme-small.json").read_text())
    dumps = []
    for i in range(2):
        data = json.loads(json.dumps(original))
        data["memories"][0]["text"] = f"writer {i}"
        path = tmp_path / f"d{i}.json"
        path.write_text(json.dumps(data))
        dumps.append(path)
    root = f"s3://{s3_bucket}/race"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "longmem_etl.cli.main", "convert", str(d), "--root", root],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for d in dumps
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code in (0, 2) for code, _ in results) and any(code == 0 for code, _ in results)
    for code, err in results:
        assert code == 0 or "another writer" in err or "appeared meanwhile" in err, err
    committed = _snapshot_keys(s3.keys(s3_bucket))
    assert len(committed) == sum(code == 0 for code, _ in results)
    c = _ok(_cli("check", "--root", root, "--read-data", "--json"))
    report = json.loads(c.stdout)
    assert report["healthy"] and len(report["snapshots"]) == len(committed)
    texts = _ok(_cli("sql", "SELECT text FROM memories WHERE text LIKE 'writer %' ORDER BY 1",
                     "--root", root, "--format", "csv"))  # fmt: skip
    assert len(texts.stdout.splitlines()) - 1 == len(committed)


def test_a_tampered_object_is_refused_by_readers_naming_its_url(s3, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/t"
    r = _ok(_cli("convert", str(SAMPLES / "acme-small.json"), "--root", root, "--json"))
    snap = json.loads(r.stdout)["path"]
    key = snap[len(f"s3://{s3_bucket}/") :] + "/collections.parquet"
    s3.client().put_object(Bucket=s3_bucket, Key=key, Body=b"PAR1 not parquet PAR1")
    for args in (("sql", "SELECT count(*) FROM memories", "--root", root),
                 ("dump", snap, "--out", str(tmp_path / "o.json"))):  # fmt: skip
        r = _cli(*args)
        assert r.returncode == 2 and snap in r.stderr and "collections.parquet" in r.stderr, (
            r.stderr
        )
    c = _cli("check", "--root", root, "--json")
    assert c.returncode == 3 and json.loads(c.stdout)["snapshots"][0]["path"] == snap


def test_the_python_api_takes_s3_roots(s3, s3_bucket, tmp_path):
    import longmem_etl

    root = f"s3://{s3_bucket}/py"
    result = longmem_etl.convert(SAMPLES / "acme-small.json", root)
    assert str(result.path).startswith(root + "/tenant=acme/snapshot=")
    assert "tenant=acme" in " ".join(s3.keys(s3_bucket))
    con = longmem_etl.connect(root, read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM memories").fetchone()[0] == 50
    finally:
        con.close()
    d = longmem_etl.diff(str(result.path), str(result.path))
    assert d.to_json()["changed"] == 0
    f = longmem_etl.forget(root, keep_last=1, dry_run=True)
    assert "longmem-etl-s3-" not in json.dumps(f.to_json(), default=str)

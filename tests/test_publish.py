"""``publish``: Iceberg tables in step with a snapshot root, exactly once per snapshot and table,
through re-runs, a SIGKILL between two tables' appends, two publishes at once, increments,
encrypted snapshots and expired Iceberg snapshots; read back by pyiceberg and by DuckDB."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from longmem_etl.api.local import LocalStore
from longmem_etl.cli.main import main
from longmem_etl.lakehouse.catalog import open_catalog
from longmem_etl.lakehouse.publish import SNAPSHOT_KEY, TENANT_KEY, published
from longmem_etl.snapshots import list_snapshots
from longmem_etl.snapshots.manifest import read_manifest
from longmem_etl.snapshots.reader import open_snapshot

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "longmem_etl" / "sample_data"
TABLES = ("memories", "collections", "rejected")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LONGMEM_ETL_IDENTITY")}
    e.update(env or {}, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "longmem_etl.cli.main", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=300,
    )


def _edit(db: Path) -> None:
    """Delete 3 memories, change 2 and add 2: the second backup is an increment."""
    store = LocalStore(db, create=False)
    try:
        mems = store.export_account()["memories"]
        for m in mems[:3]:
            store.delete(m["id"], collection=m["collection"])
        for m in mems[10:12]:
            store.update(m["id"], collection=m["collection"], text=m["text"] + " (edited)")
        store.add_many(["added later 1", "added later 2"], collection="later")
    finally:
        store.close()


def _two_backups(tmp: Path, *, env: dict[str, str] | None = None) -> tuple[Path, list[Path]]:
    db = tmp / "acct.db"
    assert main(["local", "seed", f"local:{db}", "--from", str(SAMPLES / "acme.json")]) == 0
    root = tmp / "snaps"
    for i in range(2):
        r = _cli("backup", "--source", f"local:{db}", "--root", str(root), env=env)
        assert r.returncode == 0, r.stderr
        if i == 0:
            _edit(db)
    snaps = list_snapshots(root)
    assert len(snaps) == 2
    return root, snaps


@pytest.fixture(scope="module")
def backups(tmp_path_factory):
    return _two_backups(tmp_path_factory.mktemp("publish"))


def _lake(tmp: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp / 'lake' / 'catalog.db'}", str(tmp / "lake" / "wh")


def _tables(catalog: str, warehouse: str, ns: str = "longmem") -> dict:
    cat = open_catalog(catalog, warehouse)
    return {t: cat.load_table(f"{ns}.{t}") for t in TABLES}


def _state(snap: Path) -> dict[str, pa.Table]:
    """A snapshot's full state per table, read the way every reader does."""
    s = open_snapshot(snap)
    rejected = s.read_rejected()
    return {
        "memories": s.read_memories(),
        "collections": pa.parquet.read_table(s.collections_path),
        "rejected": rejected,
    }


def _rows(table: pa.Table, key: str = "id") -> list[dict]:
    return table.sort_by(key).to_pylist()


def _without_keys(table: pa.Table) -> pa.Table:
    return table.drop_columns(["tenant", "snapshot"])


def _publish(catalog: str, warehouse: str, root: Path, *extra: str, env=None):
    return _cli(
        "publish", "--root", str(root), "--catalog", catalog, "--warehouse", warehouse, *extra,
        env=env,
    )  # fmt: skip


def test_two_backups_published_three_times_give_two_iceberg_snapshots(backups, tmp_path):
    root, (first, second) = backups
    assert read_manifest(second).get("incremental"), "the second backup should be an increment"
    catalog, warehouse = _lake(tmp_path)
    outs = [_publish(catalog, warehouse, root, "--json") for _ in range(3)]
    assert [o.returncode for o in outs] == [0, 0, 0], [o.stderr for o in outs]
    import json

    runs = [json.loads(o.stdout) for o in outs]
    assert [len(r["appended"]) for r in runs] == [2, 0, 0]
    assert runs[2]["already_published"] == 2

    tables = _tables(catalog, warehouse)
    states = [_state(first), _state(second)]
    names = [first.name.split("=", 1)[1], second.name.split("=", 1)[1]]
    for name, table in tables.items():
        history = table.snapshots()
        assert len(history) == 2, name
        for snap, state, snap_name in zip(history, states, names, strict=True):
            props = snap.summary.additional_properties
            assert props[TENANT_KEY] == "acme" and props[SNAPSHOT_KEY] == snap_name
            counts = read_manifest(first if snap_name == names[0] else second)
            full = open_snapshot(first if snap_name == names[0] else second).counts
            assert int(props.get("added-records", 0)) == full[name], (name, counts)
            # time travel: this Iceberg snapshot's rows of this longmem snapshot are exactly its state
            got = table.scan(
                snapshot_id=snap.snapshot_id, row_filter=f"snapshot == '{snap_name}'"
            ).to_arrow()
            want = state[name] if state[name] is not None else None
            if want is None:
                assert got.num_rows == 0
                continue
            key = (
                "id"
                if name == "memories"
                else ("position" if name == "collections" else "row_index")
            )
            assert _rows(_without_keys(got).cast(want.schema), key) == _rows(want, key)
            assert set(got.column("tenant").to_pylist()) == {"acme"}

    mem = tables["memories"]
    first_id = mem.snapshots()[0].snapshot_id
    as_of_first = mem.scan(snapshot_id=first_id).to_arrow()
    assert as_of_first.num_rows == states[0]["memories"].num_rows
    assert set(as_of_first.column("snapshot").to_pylist()) == {names[0]}
    total = states[0]["memories"].num_rows + states[1]["memories"].num_rows
    assert mem.scan().to_arrow().num_rows == total
    assert states[1]["memories"].num_rows == states[0]["memories"].num_rows - 3 + 2

    # DuckDB (no iceberg extension offline): the current data files pyiceberg plans, read as Parquet
    files = [t.file.file_path.removeprefix("file://") for t in mem.scan().plan_files()]
    assert files and all(Path(f).is_file() for f in files)
    con = duckdb.connect()
    per = con.execute(
        "SELECT snapshot, count(*) FROM read_parquet(?) GROUP BY ALL ORDER BY 1", [files]
    ).fetchall()
    assert per == [
        (names[0], states[0]["memories"].num_rows),
        (names[1], states[1]["memories"].num_rows),
    ]
    # ... and through Arrow (which also applies any delete files)
    arrow = mem.scan(row_filter="tenant == 'acme'").to_arrow()
    assert con.execute("SELECT count(DISTINCT id) FROM arrow").fetchone()[0] == len(
        set(pc.unique(arrow.column("id")).to_pylist())
    )
    # partitioned by tenant: data files live under tenant=acme
    assert all("/tenant=acme/" in f for f in files)


def test_rejected_rows_and_several_tenants(tmp_path):
    root = tmp_path / "snaps"
    assert main(["convert", str(SAMPLES / "bad" / "bad-rows.json"), "--root", str(root)]) == 0
    assert main(["convert", str(SAMPLES / "acme-small.json"), "--root", str(root)]) == 0
    catalog, warehouse = _lake(tmp_path)
    assert (
        main(["publish", "--root", str(root), "--catalog", catalog, "--warehouse", warehouse]) == 0
    )
    tables = _tables(catalog, warehouse)
    rejected = tables["rejected"].scan().to_arrow()
    want = sum(read_manifest(s)["counts"].get("rejected", 0) for s in list_snapshots(root))
    assert want > 0 and rejected.num_rows == want
    tenants = {read_manifest(s)["tenant"] for s in list_snapshots(root)}
    assert set(tables["memories"].scan().to_arrow().column("tenant").to_pylist()) == tenants
    # one tenant pruned by the partition: only its files are planned
    acme = list(tables["memories"].scan(row_filter="tenant == 'acme'").plan_files())
    assert acme and all("/tenant=acme/" in t.file.file_path for t in acme)


def test_killed_between_two_tables_appends_resumes_without_double_appends(backups, tmp_path):
    root, snaps = backups
    catalog, warehouse = _lake(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, signal
        from longmem_etl.lakehouse.publish import publish
        def die(table, key):
            if table == "collections" and key[1] == {snaps[1].name.split("=", 1)[1]!r}:
                os.kill(os.getpid(), signal.SIGKILL)  # after memories + collections, before rejected
        publish({str(root)!r}, {catalog!r}, {warehouse!r}, on_append=die)
        """
    )
    p = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=300,
    )
    assert p.returncode == -9, p.stderr
    tables = _tables(catalog, warehouse)
    assert [len(tables[t].snapshots()) for t in TABLES] == [2, 2, 1]
    r = _publish(catalog, warehouse, root, "--json")
    assert r.returncode == 0, r.stderr
    import json

    (resumed,) = json.loads(r.stdout)["appended"]
    assert resumed["tables"] == ["rejected"]
    tables = _tables(catalog, warehouse)
    assert [len(tables[t].snapshots()) for t in TABLES] == [2, 2, 2]
    total = sum(open_snapshot(s).counts["memories"] for s in snaps)
    assert tables["memories"].scan().to_arrow().num_rows == total


def test_two_publishes_at_once_append_each_snapshot_once(tmp_path):
    root = tmp_path / "snaps"
    for name in ("acme-small.json", "globex-dirty.json", "bad/bad-rows.json"):
        assert main(["convert", str(SAMPLES / name), "--root", str(root)]) == 0
    for i in range(3):  # more tenants: more chances for the two runs to collide
        assert main(["convert", str(SAMPLES / "acme-small.json"), "--root", str(root),
                     "--tenant", f"t{i}"]) == 0  # fmt: skip
    catalog, warehouse = _lake(tmp_path)
    cmd = [sys.executable, "-m", "longmem_etl.cli.main", "publish", "--root", str(root),
           "--catalog", catalog, "--warehouse", warehouse, "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    import json

    appended = [a for out, _ in outs for a in json.loads(out)["appended"] for _t in a["tables"]]
    snaps = list_snapshots(root)
    assert len(appended) == 3 * len(snaps)  # every (snapshot, table) appended by exactly one run
    tables = _tables(catalog, warehouse)
    for name, table in tables.items():
        keys = [
            (
                s.summary.additional_properties[TENANT_KEY],
                s.summary.additional_properties[SNAPSHOT_KEY],
            )
            for s in table.snapshots()
        ]
        assert len(keys) == len(set(keys)) == len(snaps), name
    want = sum(open_snapshot(s).counts["memories"] for s in snaps)
    assert tables["memories"].scan().to_arrow().num_rows == want


def test_a_stale_table_handle_rereads_the_journal_on_a_commit_conflict(tmp_path):
    """The retry path, deterministically: another writer appended the same snapshot after this
    run read the table, so the commit fails, the table is re-read and nothing is appended twice."""
    from longmem_etl.lakehouse.publish import _append
    from longmem_etl.lakehouse.tables import ensure_tables, to_iceberg_arrow

    root = tmp_path / "snaps"
    assert main(["convert", str(SAMPLES / "acme-small.json"), "--root", str(root)]) == 0
    (snap,) = list_snapshots(root)
    catalog, warehouse = _lake(tmp_path)
    stale = ensure_tables(open_catalog(catalog, warehouse), "longmem")["memories"]
    assert (
        main(["publish", "--root", str(root), "--catalog", catalog, "--warehouse", warehouse]) == 0
    )
    key = ("acme", snap.name.split("=", 1)[1])
    rows = to_iceberg_arrow("memories", open_snapshot(snap).read_memories(), *key)
    held: set = set()
    props = {TENANT_KEY: key[0], SNAPSHOT_KEY: key[1]}
    assert _append(stale, "memories", rows, key, props, held) is False
    assert key in held
    assert len(_tables(catalog, warehouse)["memories"].snapshots()) == 1


def test_expired_iceberg_snapshots_do_not_make_a_rerun_append_again(backups, tmp_path):
    from datetime import datetime, timedelta, timezone

    root, snaps = backups
    catalog, warehouse = _lake(tmp_path)
    assert (
        main(["publish", "--root", str(root), "--catalog", catalog, "--warehouse", warehouse]) == 0
    )
    mem = _tables(catalog, warehouse)["memories"]
    mem.maintenance.expire_snapshots().older_than(
        datetime.now(timezone.utc) + timedelta(seconds=1)
    ).commit()
    mem.refresh()
    assert len(mem.snapshots()) == 1  # the first append's summary is gone ...
    keys = {("acme", s.name.split("=", 1)[1]) for s in snaps}
    assert published(mem) == keys  # ... but its data files still say what they hold
    assert (
        main(["publish", "--root", str(root), "--catalog", catalog, "--warehouse", warehouse]) == 0
    )
    assert len(_tables(catalog, warehouse)["memories"].snapshots()) == 1


def test_encrypted_snapshots_publish_with_the_identity_only(tmp_path):
    key = tmp_path / "k"
    r = _cli("keygen", "--out", str(key))
    assert r.returncode == 0, r.stderr
    recipients = {"LONGMEM_ETL_RECIPIENTS": r.stdout.strip()}
    # with the identity, the second backup can read the first and is an encrypted increment
    root, snaps = _two_backups(tmp_path, env={**recipients, "LONGMEM_ETL_IDENTITY_FILE": str(key)})
    assert (snaps[0] / "memories.parquet.age").is_file()
    assert read_manifest(snaps[1]).get("incremental")
    catalog, warehouse = _lake(tmp_path)
    r = _publish(catalog, warehouse, root, env=recipients)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert snaps[0].name in r.stderr and "Traceback" not in r.stderr
    # nothing appended (the catalog may hold the empty tables)
    tables = _tables(catalog, warehouse)
    assert all(t.current_snapshot() is None for t in tables.values())
    r = _publish(catalog, warehouse, root, "--identity", str(key), env=recipients)
    assert r.returncode == 0, r.stderr
    mem = _tables(catalog, warehouse)["memories"]
    got = mem.scan(row_filter=f"snapshot == '{snaps[1].name.split('=', 1)[1]}'").to_arrow()
    os.environ["LONGMEM_ETL_IDENTITY_FILE"] = str(key)
    try:
        want = open_snapshot(snaps[1]).read_memories()
    finally:
        del os.environ["LONGMEM_ETL_IDENTITY_FILE"]
    assert _rows(_without_keys(got).cast(want.schema)) == _rows(want)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (fast): exit code, stdout, stderr."""
    code = main(["publish", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bad_catalogs_and_foreign_tables_exit_2_with_one_line(backups, tmp_path, capsys):
    root, _ = backups
    wh = str(tmp_path / "wh")
    lake = ["--root", str(root), "--warehouse", wh, "--catalog"]
    for uri, words in [
        ("ftp://example/x", "not a catalog URI"),
        ("sqlite:///" + str(tmp_path), "is a directory"),
        ("http://127.0.0.1:9/catalog", "cannot open the catalog"),
        ("postgresql://user:hunter2secret@127.0.0.1:9/db", "cannot open the catalog"),
    ]:
        code, out, err = _run(capsys, *lake, uri)
        assert code == 2, (uri, err)
        assert len(err.strip().splitlines()) == 1 and words in err, err
        assert "hunter2secret" not in err + out and "Traceback" not in err
    cat_db = f"sqlite:///{tmp_path / 'c.db'}"
    code, _, err = _run(capsys, "--root", str(root), "--catalog", cat_db, "--warehouse", "s3://")
    assert code == 2 and "bucket" in err
    code, _, err = _run(
        capsys, "--root", str(tmp_path / "no"), "--catalog", cat_db, "--warehouse", wh
    )
    assert code == 2 and "no such directory" in err
    code, _, err = _run(capsys, *lake, cat_db, "--namespace", "bad name")
    assert code == 2 and "--namespace" in err

    # a table of the same name written by someone else: refused, nothing created or appended
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField

    catalog, warehouse = _lake(tmp_path)
    cat = open_catalog(catalog, warehouse)
    cat.create_namespace("longmem")
    cat.create_table("longmem.rejected", schema=Schema(NestedField(1, "n", LongType())))
    code, _, err = _run(capsys, "--root", str(root), "--catalog", catalog, "--warehouse", warehouse)
    assert code == 2 and "longmem.rejected" in err and "schema" in err
    assert len(err.strip().splitlines()) == 1
    assert not cat.table_exists("longmem.memories")


def test_warehouse_on_s3_through_the_aws_environment(s3, s3_bucket, tmp_path):
    """Iceberg files on a real S3-compatible server (moto on 127.0.0.1), found through
    AWS_ENDPOINT_URL and the standard keys; the keys never appear in output or catalog."""
    from s3_support import ACCESS_KEY, SECRET_KEY

    root = tmp_path / "snaps"
    assert main(["convert", str(SAMPLES / "acme-small.json"), "--root", str(root)]) == 0
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    warehouse = f"s3://{s3_bucket}/lake"
    r = _publish(catalog, warehouse, root, "--json")
    assert r.returncode == 0, r.stderr
    keys = s3.keys(s3_bucket, "lake/")
    assert any(k.startswith("lake/longmem/memories/data/tenant=acme/") for k in keys), keys
    mem = _tables(catalog, warehouse)["memories"]
    assert mem.location().startswith(f"s3://{s3_bucket}/lake/")
    assert mem.scan().to_arrow().num_rows == 50
    assert _publish(catalog, warehouse, root).returncode == 0
    assert len(_tables(catalog, warehouse)["memories"].snapshots()) == 1
    stored = (tmp_path / "catalog.db").read_bytes()
    client = s3.client()
    stored += b"".join(
        client.get_object(Bucket=s3_bucket, Key=k)["Body"].read() for k in s3.keys(s3_bucket)
    )
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in r.stdout + r.stderr
        assert secret.encode() not in stored


def test_publish_from_an_s3_root(s3, s3_bucket, tmp_path):
    """A root on S3 publishes like a local one (its committed snapshots, once; re-runs add
    nothing), and a half-written upload under it (no manifest) is never published."""
    root = f"s3://{s3_bucket}/backups"
    assert main(["convert", str(SAMPLES / "acme-small.json"), "--root", root]) == 0
    client = s3.client()  # debris of a killed writer: data but no manifest
    client.put_object(
        Bucket=s3_bucket, Key="backups/tenant=ghost/snapshot=20260101T000000Z/memories.parquet",
        Body=b"PAR1 not really",
    )  # fmt: skip
    catalog, warehouse = _lake(tmp_path)
    args = ["publish", "--root", root, "--catalog", catalog, "--warehouse", warehouse]
    assert main(args) == 0
    mem = _tables(catalog, warehouse)["memories"]
    assert mem.scan().to_arrow().num_rows == 50
    assert set(mem.scan().to_arrow().column("tenant").to_pylist()) == {"acme"}
    assert main(args) == 0
    assert len(_tables(catalog, warehouse)["memories"].snapshots()) == 1


def test_tenant_names_are_kept_exactly_in_rows_partitions_and_journal(tmp_path):
    from datetime import datetime, timedelta, timezone

    root = tmp_path / "snaps"
    names = ["a/b", "東京", "Acme", "acme", "x y=z%"]
    for name in names:
        assert main(["convert", str(SAMPLES / "acme-small.json"), "--root", str(root),
                     "--tenant", name]) == 0  # fmt: skip
    catalog, warehouse = _lake(tmp_path)
    args = ["publish", "--root", str(root), "--catalog", catalog, "--warehouse", warehouse]
    assert main(args) == 0
    from pyiceberg.expressions import EqualTo

    mem = _tables(catalog, warehouse)["memories"]
    for name in names:
        got = mem.scan(row_filter=EqualTo("tenant", name)).to_arrow()
        assert got.num_rows == 50 and set(got.column("tenant").to_pylist()) == {name}
    mem.maintenance.expire_snapshots().older_than(
        datetime.now(timezone.utc) + timedelta(seconds=1)
    ).commit()
    mem.refresh()
    assert {t for t, _ in published(mem)} == set(names)  # from the data files alone
    assert main(args) == 0
    assert mem.scan().to_arrow().num_rows == 50 * len(names)


def test_a_snapshot_replaced_after_publishing_is_reported_not_appended_again(tmp_path):
    import shutil

    root = tmp_path / "snaps"
    assert main(["convert", str(SAMPLES / "acme-small.json"), "--root", str(root)]) == 0
    catalog, warehouse = _lake(tmp_path)
    args = ["publish", "--root", str(root), "--catalog", catalog, "--warehouse", warehouse]
    assert main(args) == 0
    # the snapshot is forgotten and another dump with the same export time takes its name
    import json

    (snap,) = list_snapshots(root)
    shutil.rmtree(snap)
    other = json.loads((SAMPLES / "globex-dirty.json").read_text())
    other["exported_at"] = json.loads((SAMPLES / "acme-small.json").read_text())["exported_at"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["convert", str(tmp_path / "other.json"), "--root", str(root),
                 "--tenant", "acme"]) == 0  # fmt: skip
    assert list_snapshots(root)[0].name == snap.name
    from longmem_etl.lakehouse.publish import publish

    result = publish(root, catalog, warehouse)
    assert not result.appended and result.changed[0]["snapshot"] == snap.name.split("=", 1)[1]
    assert "manifest changed" in result.render()
    assert len(_tables(catalog, warehouse)["memories"].snapshots()) == 1

"""Incremental snapshots: only changes stored, every reader sees the full state, order exact,
--full, full every N, forget never breaks a chain, encrypted increments compose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import run_cli

from longmem_etl.api.local import LocalStore
from longmem_etl.cli.main import main
from longmem_etl.dumps.compare import dump_differences
from longmem_etl.snapshots import list_snapshots
from longmem_etl.snapshots.manifest import read_manifest

SAMPLES = Path(__file__).resolve().parent.parent / "longmem_etl" / "sample_data"


def _cli(args: list[str], env: dict[str, str] | None = None):
    return run_cli(*args, env=env)


def _export(db: Path) -> dict:
    store = LocalStore(db, create=False)
    try:
        return store.export_account()
    finally:
        store.close()


def _edit(db: Path, *, edit: int, delete: int, add: int, offset: int = 0) -> None:
    """Edit, delete and add memories spread over the account (not only at its end)."""
    store = LocalStore(db, create=False)
    try:
        mems = store.export_account()["memories"]
        step = max(1, len(mems) // (edit + delete + 1))
        picked = mems[offset::step]
        for m in picked[:edit]:
            store.update(m["id"], collection=m["collection"], text=m["text"] + " (edited)")
        for m in picked[edit : edit + delete]:
            store.delete(m["id"], collection=m["collection"])
        store.add_many([f"added later {offset} {i}" for i in range(add)], collection="later")
    finally:
        store.close()


def _valid(snap: Path) -> None:
    """The manifest matches schemas/manifest.schema.json."""
    import jsonschema

    schema = json.loads((SAMPLES.parent.parent / "schemas" / "manifest.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(read_manifest(snap))


def _bytes(snap: Path) -> int:
    return sum(p.stat().st_size for p in snap.iterdir() if p.name != "manifest.json")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """20k memories (the sample generator), a full backup, then 80 edited / 60 deleted / 60 added
    and a second backup."""
    tmp = tmp_path_factory.mktemp("incr")
    dump = tmp / "big.json"
    subprocess.run(
        [
            sys.executable,
            str(SAMPLES.parent.parent / "sample_data" / "generate.py"),
            "big",
            "--count",
            "20000",
            "--out",
            str(dump),
        ],
        check=True,
        capture_output=True,
    )
    db = tmp / "acct.db"
    assert main(["local", "seed", f"local:{db}", "--from", str(dump)]) == 0
    root = tmp / "snaps"
    assert main(["backup", "--source", f"local:{db}", "--root", str(root)]) == 0
    _edit(db, edit=80, delete=60, add=60)
    assert main(["backup", "--source", f"local:{db}", "--root", str(root)]) == 0
    return {"tmp": tmp, "db": db, "root": root, "export": _export(db)}


def test_second_backup_stores_only_the_changes(big):
    first, second = list_snapshots(big["root"])
    assert (first / "memories.parquet").is_file()
    assert not (second / "memories.parquet").exists()  # other Parquet readers cannot mistake it
    inc = read_manifest(second)["incremental"]
    assert inc["parent"] == first.name and inc["base"] == first.name and inc["depth"] == 1
    assert inc["changed_rows"] == 140 and inc["removed_ids"] == 60  # 80 edited + 60 added
    assert read_manifest(second)["counts"]["memories"] == 20000
    _valid(first)
    _valid(second)
    assert _bytes(second) <= 0.10 * _bytes(first), (_bytes(second), _bytes(first))


def test_increment_reads_back_as_the_full_state(big, tmp_path):
    _, second = list_snapshots(big["root"])
    out = tmp_path / "d.json"
    r = _cli(["dump", str(second), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert dump_differences(big["export"], json.loads(out.read_text())) == []  # order too
    r = _cli(["sql", "--root", str(big["root"]), "--format", "csv",
              "SELECT snapshot, count(*), count(DISTINCT id), "
              "count(*) FILTER (text LIKE '%(edited)') FROM memories GROUP BY ALL ORDER BY 1"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [line.split(",")[1:] for line in r.stdout.strip().splitlines()[1:]]
    assert rows == [["20000", "20000", "0"], ["20000", "20000", "80"]]
    r = _cli(["diff", str(list_snapshots(big["root"])[0]), str(second), "--json"])
    d = json.loads(r.stdout)
    assert (d["added"], d["removed"], d["changed"]) == (60, 60, 80)


def test_full_flag_and_full_every(big, tmp_path):
    import shutil

    root = tmp_path / "snaps"
    shutil.copytree(big["root"], root)
    src = f"local:{big['db']}"
    assert main(["backup", "--source", src, "--root", str(root), "--full"]) == 0
    assert (list_snapshots(root)[-1] / "memories.parquet").is_file()
    assert main(["backup", "--source", src, "--root", str(root), "--full-every", "1"]) == 0
    third = list_snapshots(root)[-1]
    inc = read_manifest(third)["incremental"]  # nothing changed: an empty increment
    assert inc["changed_rows"] == 0 and inc["removed_ids"] == 0
    assert main(["backup", "--source", src, "--root", str(root), "--full-every", "1"]) == 0
    assert (list_snapshots(root)[-1] / "memories.parquet").is_file()  # chain had 1 increment


def test_forget_removing_the_base_keeps_increments_readable(big, tmp_path):
    import shutil

    root = tmp_path / "snaps"
    shutil.copytree(big["root"], root)
    db = tmp_path / "acct.db"
    shutil.copy(big["db"], db)
    _edit(db, edit=10, delete=5, add=5, offset=7)
    assert main(["backup", "--source", f"local:{db}", "--root", str(root)]) == 0
    full, inc1, inc2 = list_snapshots(root)
    assert read_manifest(inc2)["incremental"]["parent"] == inc1.name
    r = _cli(["forget", "--root", str(root), "--keep-last", "2", "--json"])
    assert r.returncode == 0, r.stderr
    assert list_snapshots(root) == [inc1, inc2]
    assert (inc1 / "memories.parquet").is_file()  # rebased into a full one
    assert "incremental" not in read_manifest(inc1)
    out = tmp_path / "d.json"
    assert _cli(["dump", str(inc1), "--out", str(out)]).returncode == 0
    assert dump_differences(big["export"], json.loads(out.read_text())) == []
    out2 = tmp_path / "d2.json"
    assert _cli(["dump", str(inc2), "--out", str(out2)]).returncode == 0
    assert dump_differences(_export(db), json.loads(out2.read_text())) == []


def test_encrypted_increments_compose(tmp_path):
    db = tmp_path / "acct.db"
    assert main(["local", "seed", f"local:{db}", "--from", str(SAMPLES / "acme.json")]) == 0
    key = tmp_path / "k"
    r = _cli(["keygen", "--out", str(key)])
    env = {"LONGMEM_ETL_RECIPIENTS": r.stdout.strip(), "LONGMEM_ETL_IDENTITY_FILE": str(key)}
    root = tmp_path / "snaps"
    for _ in range(2):
        r = _cli(["backup", "--source", f"local:{db}", "--root", str(root)], env=env)
        assert r.returncode == 0, r.stderr
        _edit(db, edit=5, delete=3, add=2)
    first, second = list_snapshots(root)
    assert (second / "changed_memories.parquet.age").is_file()
    assert read_manifest(second)["incremental"]["parent"] == first.name
    _valid(first)
    _valid(second)
    r = _cli(["sql", "--root", str(root), "--format", "csv",
              "SELECT count(*) FROM latest_memories"], env=env)  # fmt: skip
    assert r.returncode == 0 and r.stdout.split()[-1] == "1999", r.stderr  # 2000 - 3 + 2
    no_key = {"LONGMEM_ETL_RECIPIENTS": env["LONGMEM_ETL_RECIPIENTS"]}
    r = _cli(["dump", str(second), "--out", str(tmp_path / "d.json")], env=no_key)
    assert r.returncode == 2 and second.name in r.stderr
    # without the identity a backup still works: it cannot read the parent, so it is full
    r = _cli(["backup", "--source", f"local:{db}", "--root", str(root)], env=no_key)
    assert r.returncode == 0, r.stderr
    assert (list_snapshots(root)[-1] / "memories.parquet.age").is_file()


def test_broken_chain_is_reported(big, tmp_path):
    import shutil

    root = tmp_path / "snaps"
    shutil.copytree(big["root"], root)
    first, second = list_snapshots(root)
    shutil.rmtree(first)  # by hand, not through forget
    r = _cli(["dump", str(second), "--out", str(tmp_path / "d.json")])
    assert r.returncode == 2 and "chain broken" in r.stderr and first.name in r.stderr


def test_forget_rebases_an_encrypted_increment(tmp_path):
    db = tmp_path / "acct.db"
    assert main(["local", "seed", f"local:{db}", "--from", str(SAMPLES / "acme.json")]) == 0
    key = tmp_path / "k"
    recipient = _cli(["keygen", "--out", str(key)]).stdout.strip()
    env = {"LONGMEM_ETL_RECIPIENTS": recipient, "LONGMEM_ETL_IDENTITY_FILE": str(key)}
    root = tmp_path / "snaps"
    for _ in range(2):
        r = _cli(["backup", "--source", f"local:{db}", "--root", str(root)], env=env)
        assert r.returncode == 0, r.stderr
        _edit(db, edit=5, delete=3, add=2)
    r = _cli(["backup", "--source", f"local:{db}", "--root", str(root), "--full"], env=env)
    first, second, third = list_snapshots(root)
    assert read_manifest(second)["incremental"]["parent"] == first.name
    # without the identity the base cannot be removed: the increment could not be rebased
    r = _cli(["forget", "--root", str(root), "--keep-last", "2"], env={"X": "1"})
    assert r.returncode == 2 and second.name in r.stderr
    assert list_snapshots(root) == [first, second, third]
    r = _cli(["forget", "--root", str(root), "--keep-last", "2", "--json"], env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rebased"] == [str(second)]
    assert list_snapshots(root) == [second, third]
    names = sorted(p.name for p in second.iterdir())
    _valid(second)
    assert "memories.parquet.age" in names and not any("changed" in n for n in names)
    r = _cli(["diff", str(second), str(third), "--json"], env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["added"] == 2


def test_a_tampered_base_makes_its_increments_unreadable_and_unverified(big, tmp_path):
    import shutil

    from longmem_etl.retention import is_verified

    root = tmp_path / "snaps"
    shutil.copytree(big["root"], root)
    first, second = list_snapshots(root)
    data = bytearray((first / "memories.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (first / "memories.parquet").write_bytes(bytes(data))
    assert not is_verified(second)  # an increment verifies only with its whole chain
    r = _cli(["dump", str(second), "--out", str(tmp_path / "d.json")])
    assert r.returncode == 2 and "memories.parquet" in r.stderr and first.name in r.stderr
    # the next backup does not build on a damaged chain: it is a full snapshot
    assert main(["backup", "--source", f"local:{big['db']}", "--root", str(root)]) == 0
    assert (list_snapshots(root)[-1] / "memories.parquet").is_file()

"""Per-memory content hashes: what they detect, increments found while writing, the fallback to a
full snapshot, and chains written before hashes existed (still readable, still parents)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from longmem_etl.schema import MEMORIES_SCHEMA
from longmem_etl.snapshots import list_snapshots
from longmem_etl.snapshots.convert import snapshot_from_dump
from longmem_etl.snapshots.incremental import Incremental, hashes_state_sql
from longmem_etl.snapshots.manifest import read_manifest, write_manifest
from longmem_etl.snapshots.reader import open_snapshot
from longmem_etl.snapshots.rowhash import HASHES, digests, has_hashes

BASE_ROW = {
    "id": "m1",
    "collection": "notes",
    "text": "hello world",
    "importance": 0.5,
    "category": "a",
    "metadata": '{"a":1,"b":2}',
    "source": "s",
    "container_tag": None,
    "pinned": False,
    "archived": None,
    "created_at": 1_700_000_000_000_000,
    "updated_at": None,
    "expires_at": None,
    "superseded_by": None,
    "extra": None,
    "fidelity": None,
}

VARIANTS = {
    "one character": {"text": "hello worle"},
    "metadata keys reordered": {"metadata": '{"b":2,"a":1}'},
    "NULL vs empty string": {"container_tag": ""},
    "empty vs NULL": {"category": None},
    "text moved across columns": {"category": "as", "source": ""},
    "minus zero": {"importance": -0.0},
    "importance": {"importance": 0.5000000000000001},
    "NULL vs false": {"pinned": None},
    "archived true": {"archived": True},
    "one microsecond": {"created_at": 1_700_000_000_000_001},
    "timestamp set": {"updated_at": 0},
    "extra empty object": {"extra": "{}"},
    "fidelity": {"fidelity": '{"absent":["source"]}'},
    "other id": {"id": "m2"},
    "NUL inside text": {"text": "hello\x00world"},
}


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=MEMORIES_SCHEMA)


def test_every_kind_of_edit_changes_the_digest():
    rows = [BASE_ROW, dict(BASE_ROW)] + [{**BASE_ROW, **v} for v in VARIANTS.values()]
    con = duckdb.connect()
    md5 = digests(con, _table(rows)).to_pylist()
    assert all(len(d) == 16 for d in md5)
    assert md5[0] == md5[1]  # the same content, the same digest
    names = ["base", *VARIANTS]
    seen = dict(zip(md5[1:], names[:1] + names[1:], strict=True))
    assert len(seen) == len(rows) - 1, "two different rows share a digest"
    # batching does not matter: each row alone gives the same digest
    assert [digests(con, _table([r])).to_pylist()[0] for r in rows] == md5


def _dump(mems: list[dict], day: int) -> dict:
    return {
        "format_version": 1,
        "tenant": "t",
        "exported_at": f"2025-01-{day:02d}T00:00:00Z",
        "collections": ["notes", "other"],
        "memories": mems,
    }


def _mems(n: int) -> list[dict]:
    return [
        {
            "id": f"m{i:04d}",
            "collection": "notes" if i % 3 else "other",
            "text": f"memory number {i}",
            "importance": i / 7,
            "metadata": {"k": i, "tags": ["x", "y"]},
        }
        for i in range(n)
    ]


def _convert(root: Path, mems: list[dict], day: int, *, batch: int = 64, full: bool = False):
    return snapshot_from_dump(
        _dump(mems, day),
        root,
        source={"kind": "test", "day": day},
        incremental=Incremental(full=full),
        batch_size=batch,
    )


def _state(path: Path) -> list[dict]:
    return [m for batch in open_snapshot(path).iter_dump_memories() for m in batch]


def _expected(mems: list[dict], root: Path, day: int) -> list[dict]:
    """What a full snapshot of ``mems`` reads back as (the reference for any increment)."""
    return _state(_convert(root, mems, day, full=True).path)


def test_increment_is_exactly_what_changed(tmp_path):
    base = _mems(400)
    first = _convert(tmp_path / "r", base, 1)
    assert has_hashes(read_manifest(first.path))
    new = copy.deepcopy(base)
    new[10]["text"] += "!"  # one character
    new[20]["metadata"] = {"tags": ["x", "y"], "k": 20}  # keys reordered: other bytes
    new[30]["category"] = ""  # absent -> empty string
    new[40]["importance"] = -0.0
    del new[50]
    new.append({"id": "added", "collection": "notes", "text": "new one"})
    second = _convert(tmp_path / "r", new, 2)
    info = read_manifest(second.path)["incremental"]
    assert (info["changed_rows"], info["removed_ids"]) == (5, 1)
    assert _state(second.path) == _expected(new, tmp_path / "ref", 2)


def test_moved_rows_keep_the_accounts_order(tmp_path):
    base = _mems(300)
    _convert(tmp_path / "r", base, 1)
    new = copy.deepcopy(base)
    new.insert(5, new.pop(250))  # one row moved up
    new.insert(0, {"id": "first", "collection": "notes", "text": "now first"})
    snap = _convert(tmp_path / "r", new, 2).path
    assert read_manifest(snap)["incremental"]["changed_rows"] == 2
    assert [m["id"] for m in _state(snap)] == [m["id"] for m in new]
    # and a third layer on top of that
    new2 = new[:100] + [{"id": "mid", "collection": "notes", "text": "middle"}] + new[100:]
    snap3 = _convert(tmp_path / "r", new2, 3).path
    assert read_manifest(snap3)["incremental"]["depth"] == 2
    assert _state(snap3) == _expected(new2, tmp_path / "ref", 3)


def test_too_many_changes_write_a_full_snapshot_with_hashes(tmp_path):
    base = _mems(200)
    _convert(tmp_path / "r", base, 1)
    new = list(reversed(copy.deepcopy(base)))  # every row moved
    for m in new[:20]:
        m["text"] += " edited"
    snap = _convert(tmp_path / "r", new, 2).path
    manifest = read_manifest(snap)
    assert "incremental" not in manifest and "memories.parquet" in manifest["files"]
    assert has_hashes(manifest)
    assert _state(snap) == _expected(new, tmp_path / "ref", 2)
    con = duckdb.connect()  # its hash file is the one a full write would have made
    stored = con.sql(f"SELECT md5 FROM read_parquet('{snap / HASHES}')").fetchall()
    table = open_snapshot(snap).read_memories()
    assert [r[0] for r in stored] == digests(con, table).to_pylist()


def _strip_hashes(snap: Path) -> None:
    """Make ``snap`` what a version before row hashes wrote: no hash file, no manifest entry."""
    m = read_manifest(snap)
    m["files"].pop(HASHES)
    m.pop("row_hashes")
    m.pop("manifest_sha256", None)
    if "incremental" in m:  # nor did it record its parent's manifest checksum
        m["incremental"].pop("parent_manifest_sha256", None)
    os.unlink(snap / HASHES)
    write_manifest(snap, m)


def test_a_chain_written_before_hashes_is_read_and_extended(tmp_path):
    from longmem_etl.snapshots.integrity import check_snapshot

    root = tmp_path / "r"
    base = _mems(300)
    _convert(root, base, 1)
    v2 = copy.deepcopy(base)
    v2[7]["text"] += " v2"
    del v2[100]
    _convert(root, v2, 2)
    old = list_snapshots(root)
    assert len(old) == 2 and "incremental" in read_manifest(old[1])
    for snap in old:
        _strip_hashes(snap)
        assert check_snapshot(snap) == [] and not has_hashes(read_manifest(snap))
    assert _state(old[1]) == _expected(v2, tmp_path / "ref2", 2)
    # digests computed from content for the old layers equal the ones a new write stores
    con = duckdb.connect()
    computed = con.sql(f"SELECT md5 FROM ({hashes_state_sql(old[1])}) ORDER BY _seq").fetchall()
    ref = list_snapshots(tmp_path / "ref2")[0]
    stored = con.sql(f"SELECT md5 FROM read_parquet('{ref / HASHES}')").fetchall()
    assert computed == stored
    v3 = copy.deepcopy(v2)
    v3[3]["importance"] = 99.0
    v3.append({"id": "late", "collection": "other", "text": "late"})
    snap = _convert(root, v3, 3).path
    info = read_manifest(snap)["incremental"]
    assert (info["parent"], info["changed_rows"], info["removed_ids"]) == (old[1].name, 2, 0)
    assert has_hashes(read_manifest(snap))
    assert _state(snap) == _expected(v3, tmp_path / "ref3", 3)


def test_a_tampered_hash_file_is_not_trusted(tmp_path):
    root = tmp_path / "r"
    base = _mems(100)
    first = _convert(root, base, 1).path
    data = bytearray((first / HASHES).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (first / HASHES).write_bytes(bytes(data))
    new = copy.deepcopy(base)
    new[0]["text"] = "changed"
    snap = _convert(root, new, 2).path
    assert "incremental" not in read_manifest(snap)  # the parent does not verify: a full one
    assert _state(snap) == _expected(new, tmp_path / "ref", 2)


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_batching_does_not_change_the_increment(tmp_path, batch):
    base = _mems(120)
    _convert(tmp_path / "r", base, 1, batch=50)
    new = copy.deepcopy(base)
    for i in (0, 33, 119):
        new[i]["text"] += "*"
    new.insert(60, {"id": "x", "collection": "notes", "text": "inserted"})
    snap = _convert(tmp_path / "r", new, 2, batch=batch).path
    assert read_manifest(snap)["incremental"]["changed_rows"] == 4
    assert _state(snap) == _expected(new, tmp_path / "ref", 2)

"""Snapshots: convert -> snapshot layout/manifest -> read back -> dump, lossless and atomic."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from longmem_etl import jsonio
from longmem_etl.dumps import normalize_memories
from longmem_etl.dumps.compare import dump_differences
from longmem_etl.errors import BadInput
from longmem_etl.schema import MEMORIES_SCHEMA, REJECTED_SCHEMA
from longmem_etl.snapshots import (
    SnapshotWriter,
    convert_dump,
    latest_snapshot,
    list_snapshots,
    open_snapshot,
    snapshot_from_dump,
)
from longmem_etl.snapshots.dump import write_dump


def make_dump(n: int = 50, *, tenant: object = "acme") -> dict:
    mems = []
    for i in range(n):
        m = {
            "id": f"m{i:05d}",
            "collection": ["notes", "crm", "ops"][i % 3],
            "text": f"memory number {i} — ünïcödé 😀 עברית",
            "importance": [0.5, 1, 0.25, 0.1][i % 4],
            "category": None if i % 5 == 0 else "fact",
            "metadata": [{"src": "crm", "n": i}, None, [1, 2, {"x": 1.5}], "plain", 7][i % 5],
            "source": "import",
            "container_tag": f"user-{i % 7}",
            "pinned": i % 2 == 0,
            "archived": False,
            "created_at": "2025-01-02T03:04:05.123456+00:00",
            "updated_at": "2025-01-03T00:00:00Z",
            "expires_at": None,
            "superseded_by": None,
        }
        if i % 9 == 0:
            del m["source"]
        mems.append(m)
    return {
        "tenant": tenant,
        "exported_at": "2025-01-04T00:00:00Z",
        "collections": ["notes", {"name": "crm", "size": 10**30}, "ops"],
        "memories": mems,
    }


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def load_any(path: Path):
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    if path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    if ".jsonl" in path.name:
        lines = [ln for ln in data.splitlines() if ln.strip()]
        first = jsonio.loads(lines[0])
        header = {}
        if "format_version" in first and "id" not in first:
            header = first
            lines = lines[1:]
        return {**header, "memories": [jsonio.loads(x) for x in lines]}
    return jsonio.loads(data)


def test_convert_layout_manifest_and_roundtrip(tmp_path):
    dump = make_dump()
    src = write_json(tmp_path / "in.json", dump)
    res = convert_dump(src, tmp_path / "root", progress=False)
    assert res.memories == 50 and res.rejected == 0 and res.collections == 3
    assert res.path.parent.name == "tenant=acme"
    assert res.path.name.startswith("snapshot=") and res.path.name.endswith("Z")
    files = sorted(p.name for p in res.path.iterdir())
    assert files == [
        "collections.parquet",
        "manifest.json",
        "memories.parquet",
        "memory_hashes.parquet",
    ]
    snap = open_snapshot(res.path)
    m = snap.manifest
    assert m["counts"] == {"memories": 50, "collections": 3, "rejected": 0}
    assert set(m["files"]) == {"memories.parquet", "collections.parquet", "memory_hashes.parquet"}
    assert m["dump_header"]["tenant"] == "acme"
    assert m["exported_at"] == "2025-01-04T00:00:00Z"
    assert snap.read_memories().schema.equals(MEMORIES_SCHEMA)
    out = tmp_path / "out.json"
    write_dump(res.path, out)
    back = load_any(out)
    assert back["format_version"] == 1
    assert dump_differences(dump, back) == []
    assert snap.collections()[1] == {"name": "crm", "size": 10**30}


@pytest.mark.parametrize("ext", [".json", ".json.gz", ".json.zst", ".jsonl", ".jsonl.gz"])
def test_every_format_roundtrips(tmp_path, ext):
    dump = make_dump(20, tenant={"id": "t-1", "name": "Tenant One"})
    first = convert_dump(write_json(tmp_path / "a.json", dump), tmp_path / "r", progress=False)
    out = tmp_path / f"out{ext}"
    write_dump(first.path, out)
    assert dump_differences(dump, load_any(out)) == []
    again = convert_dump(out, tmp_path / "r2", progress=False)
    assert again.tenant == "t-1" and again.memories == 20
    assert dump_differences(dump, open_snapshot(again.path).to_dump()) == []


def test_timestamps_same_instant_and_nanoseconds_kept(tmp_path):
    dump = make_dump(3)
    dump["memories"][0]["created_at"] = "2025-01-02T05:04:05.5+02:00"
    dump["memories"][1]["created_at"] = "2025-01-02T03:04:05.123456789Z"
    dump["memories"][2]["created_at"] = "2025-01-02T03:04:05"
    res = convert_dump(write_json(tmp_path / "t.json", dump), tmp_path / "r", progress=False)
    back = open_snapshot(res.path).to_dump()["memories"]
    assert back[0]["created_at"] == "2025-01-02T03:04:05.500000Z"
    assert back[1]["created_at"] == "2025-01-02T03:04:05.123456789Z"
    assert back[2]["created_at"] == "2025-01-02T03:04:05"
    col = open_snapshot(res.path).read_memories().column("created_at").to_pylist()
    assert col[1].microsecond == 123456


def test_null_vs_absent_and_extra_fields(tmp_path):
    dump = {
        "tenant": "x",
        "memories": [
            {"id": "a", "text": "t", "category": None, "new_field": {"deep": [1, 2**70]}},
            {"id": "b", "text": "t"},
        ],
        "top_extra": 1e300,
    }
    res = convert_dump(write_json(tmp_path / "d.json", dump), tmp_path / "r", progress=False)
    snap = open_snapshot(res.path)
    t = snap.read_memories()
    assert t.column("extra").to_pylist()[0] == '{"new_field":{"deep": [1, 1180591620717411303424]}}'
    back = snap.to_dump()
    assert back["memories"][0] == {
        "id": "a",
        "text": "t",
        "category": None,
        "new_field": {"deep": [1, 2**70]},
    }
    assert back["memories"][1] == {"id": "b", "text": "t"}
    assert "collections" not in back
    assert dump_differences(dump, back) == []


def test_snapshot_from_dump_and_normalize_memories(tmp_path):
    dump = make_dump(10)
    dump["memories"].append({"id": "m00001", "text": "dup"})
    dump["memories"].append("just a string")
    res = snapshot_from_dump(dump, tmp_path / "r", source={"kind": "test"})
    assert (res.memories, res.rejected) == (10, 2)
    good, rejected = normalize_memories(dump["memories"])
    assert good.num_rows == 10 and rejected.num_rows == 2
    assert rejected.schema.equals(REJECTED_SCHEMA)
    assert rejected.column("row_index").to_pylist() == [10, 11]
    with pytest.raises(BadInput, match="strict"):
        snapshot_from_dump(dump, tmp_path / "r2", source={"kind": "test"}, strict=True)
    assert not (tmp_path / "r2").exists() or list_snapshots(tmp_path / "r2") == []


def test_writer_is_atomic_on_failure(tmp_path):
    root = tmp_path / "root"
    good, _ = normalize_memories(make_dump(5)["memories"])
    with pytest.raises(RuntimeError), SnapshotWriter(root, "acme", source={"kind": "t"}) as w:
        w.write_memories(good)
        assert w.temp_path is not None and (w.temp_path / "memories.parquet").exists()
        raise RuntimeError("injected failure mid-write")
    assert sorted(os.listdir(root)) == []


def test_writer_failure_at_commit_leaves_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "tenant=acme").write_text("a file where the tenant dir should be")
    good, _ = normalize_memories(make_dump(5)["memories"])
    # in the way and not ours: an exit-2 error naming it, and nothing else left behind
    with (
        pytest.raises(BadInput, match="tenant=acme: (already )?exists and is not a directory"),
        SnapshotWriter(root, "acme", source={"kind": "t"}) as w,
    ):
        w.write_memories(good)
    assert sorted(os.listdir(root)) == ["tenant=acme"]


def test_same_second_snapshots_get_distinct_names_and_listing(tmp_path):
    root = tmp_path / "root"
    paths = []
    for _ in range(3):
        with SnapshotWriter(root, "acme", source={"kind": "t"}) as w:
            w.write_memories(pa.Table.from_pylist([], schema=MEMORIES_SCHEMA))
        paths.append(w.path)
    assert len(set(paths)) == 3
    assert list_snapshots(root, "acme") == sorted(paths)
    assert latest_snapshot(root, "acme") == sorted(paths)[-1]
    assert list_snapshots(root) == sorted(paths)


def test_open_snapshot_rejects_non_snapshots_and_tampering(tmp_path):
    with pytest.raises(BadInput, match="no manifest"):
        open_snapshot(tmp_path)
    res = snapshot_from_dump(make_dump(5), tmp_path / "r", source={"kind": "t"})
    p = res.path / "collections.parquet"
    data = bytearray(p.read_bytes())
    data[10] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BadInput, match="checksum"):
        open_snapshot(res.path)


def test_extra_manifest_and_parent(tmp_path):
    res = snapshot_from_dump(
        make_dump(2),
        tmp_path / "r",
        source={"kind": "t"},
        parent="/x/y",
        extra_manifest={"transform": {"steps": 2}},
    )
    m = open_snapshot(res.path).manifest
    assert m["parent"] == "/x/y" and m["transform"] == {"steps": 2}
    with pytest.raises(ValueError):
        SnapshotWriter(tmp_path, "t", source={}, extra_manifest={"counts": 1})


def test_manifest_matches_its_json_schema(tmp_path):
    import jsonschema

    schema = json.loads(
        (Path(__file__).resolve().parents[1] / "schemas/manifest.schema.json").read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    dump = make_dump(3)
    dump["memories"].append(5)  # one rejected row: rejected.parquet is listed too
    res = snapshot_from_dump(dump, tmp_path / "r", source={"kind": "t"}, extra_manifest={"x": 1})
    manifest = json.loads((res.path / "manifest.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(manifest)
    assert set(manifest["files"]) == {
        "memories.parquet",
        "collections.parquet",
        "rejected.parquet",
        "memory_hashes.parquet",
    }
    assert manifest["snapshot"] == res.path.name and manifest["tenant"] == "acme"


@pytest.mark.parametrize("problem", ["broken last line", "strict rejection late"])
def test_failure_after_chunks_were_written_leaves_nothing(tmp_path, problem):
    lines = [json.dumps({"id": f"r{i}", "text": "t"}) for i in range(100)]
    if problem == "broken last line":
        lines.append('{"id": "tail", "te')
    else:
        lines.append(json.dumps({"id": "r1", "text": "dup"}))
    src = tmp_path / "late.jsonl"
    src.write_text("\n".join(lines) + "\n")
    root = tmp_path / "root"
    with pytest.raises(BadInput, match="line 101" if problem.startswith("broken") else "strict"):
        convert_dump(src, root, progress=False, batch_size=10, strict=True)
    assert os.listdir(root) == []  # no snapshot dir, no .tmp-* dir


def test_outputs_have_ordinary_permissions(tmp_path):
    res = snapshot_from_dump(make_dump(2), tmp_path / "r", source={"kind": "t"})
    mask = os.umask(0)
    os.umask(mask)
    assert res.path.stat().st_mode & 0o777 == 0o777 & ~mask
    out = tmp_path / "d.json"
    write_dump(res.path, out)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask

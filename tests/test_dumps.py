"""Reading dumps: every rejection reason, every whole-file problem, formats and BOM."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from longmem_etl.dumps import normalize_memories
from longmem_etl.dumps.read import open_dump
from longmem_etl.errors import BadInput
from longmem_etl.snapshots import convert_dump, open_snapshot

GOOD = {"id": "ok", "text": "fine"}

REJECTS = [
    (5, None, "row is a number, expected an object"),
    ("str", None, "row is a string, expected an object"),
    ([1], None, "row is an array, expected an object"),
    (None, None, "row is null, expected an object"),
    ({"text": "t"}, "id", "missing id"),
    ({"id": 3, "text": "t"}, "id", "id is a number"),
    ({"id": "", "text": "t"}, "id", "empty string"),
    ({"id": None, "text": "t"}, "id", "id is null"),
    ({"id": "ok", "text": "dup"}, "id", "duplicate id"),
    ({"id": "x1"}, "text", "missing text"),
    ({"id": "x2", "text": None}, "text", "text is null"),
    ({"id": "x3", "text": ["a"]}, "text", "text is an array"),
    ({"id": "x4", "text": "t", "pinned": 1}, "pinned", "expected a boolean"),
    ({"id": "x5", "text": "t", "archived": "yes"}, "archived", "expected a boolean"),
    ({"id": "x6", "text": "t", "importance": True}, "importance", "is a boolean"),
    ({"id": "x7", "text": "t", "importance": "high"}, "importance", "is a string"),
    ({"id": "x8", "text": "t", "collection": 1}, "collection", "expected a string"),
    ({"id": "x9", "text": "t", "category": {"a": 1}}, "category", "expected a string"),
    ({"id": "y1", "text": "t", "container_tag": True}, "container_tag", "expected a string"),
    ({"id": "y2", "text": "t", "created_at": "yesterday"}, "created_at", "not an ISO-8601"),
    ({"id": "y3", "text": "t", "updated_at": 1700000000}, "updated_at", "expected an ISO-8601"),
    ({"id": "y4", "text": "t", "expires_at": "2025-13-45T00:00:00Z"}, "expires_at", "ISO-8601"),
    ({"id": "y5", "text": "t", "superseded_by": 12}, "superseded_by", "expected a string"),
    ({"id": "y6", "text": "t", "source": False}, "source", "expected a string"),
]


@pytest.mark.parametrize("row,field,reason", REJECTS, ids=[r[2] for r in REJECTS])
def test_each_rejection_reason(row, field, reason):
    good, rejected = normalize_memories([GOOD, row, {"id": "after", "text": "t"}])
    assert good.column("id").to_pylist() == ["ok", "after"]
    assert rejected.num_rows == 1
    r = rejected.to_pylist()[0]
    assert r["stage"] == "convert" and r["row_index"] == 1
    assert r["field"] == field
    assert reason in r["reason"]
    assert json.loads(r["raw"]) == row
    if isinstance(row, dict) and isinstance(row.get("id"), str) and row["id"]:
        assert r["id"] == row["id"]


def test_good_plus_rejected_equals_input_across_batches():
    rows = [GOOD] + [r[0] for r in REJECTS] * 3 + [{"id": f"g{i}", "text": "t"} for i in range(50)]
    good, rejected = normalize_memories(rows, batch_size=7)
    assert good.num_rows + rejected.num_rows == len(rows)
    idx = sorted(rejected.column("row_index").to_pylist())
    assert len(set(idx)) == len(idx)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


VALID = json.dumps({"tenant": "t", "memories": [GOOD]}).encode()

BAD_FILES = [
    ("empty.json", b"", "empty file"),
    ("blank.json", b"  \n ", "empty file"),
    ("notjson.json", b"hello world", "not valid JSON"),
    ("truncated.json", VALID[:-7], "truncated"),
    ("trailing.json", VALID + b" {}", "trailing"),
    ("array.json", b"[1, 2]", "top level is an array"),
    ("string.json", b'"x"', "top level is a string"),
    ("nomem.json", b'{"tenant": "t"}', "no 'memories' list"),
    ("memobj.json", b'{"memories": {"a": 1}}', "'memories' is not a list"),
    ("badcoll.json", b'{"memories": [], "collections": 5}', "'collections' is a number"),
    ("version.json", b'{"format_version": 2, "memories": []}', "unknown format_version 2"),
    ("versionstr.json", b'{"format_version": "1", "memories": []}', "unknown format_version"),
    ("corrupt.json.gz", b"\x1f\x8b\x08\x00garbage-garbage-garbage", "corrupt gzip"),
    ("notgz.json.gz", b"plain text, not gzip", "gzip"),
    ("trunc.json.gz", gzip.compress(VALID)[:-12], "truncated gzip"),
    ("corrupt.json.zst", b"\x28\xb5\x2f\xfdgarbage", "zstd"),
    ("badline.jsonl", b'{"id": "a", "text": "t"}\n{"id": "b",\n', "line 2"),
    ("trunc.jsonl", b'{"id": "a", "text": "t"}\n{"id": "b", "te', "line 2: not valid JSON"),
    ("empty.jsonl", b"\n\n", "empty file"),
    ("version.jsonl", b'{"format_version": 9}\n', "unknown format_version 9"),
    ("version2.jsonl", b'{"__header__": {"format_version": 9}}\n', "unknown format_version 9"),
    ("weird.txt", b"{}", "unknown dump format"),
]


@pytest.mark.parametrize("name,data,problem", BAD_FILES, ids=[b[0] for b in BAD_FILES])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_files_are_refused_with_one_clear_line(tmp_path, name, data, problem, stream):
    p = _write(tmp_path, name, data)
    root = tmp_path / "root"
    with pytest.raises(BadInput) as info:
        convert_dump(p, root, progress=False, stream=stream)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(p)), msg
    assert problem in msg, msg
    assert not root.exists() or os.listdir(root) == []


def test_bom_is_tolerated(tmp_path):
    for name in ("bom.json", "bom.jsonl"):
        body = VALID if name.endswith(".json") else b'{"id":"a","text":"t"}\n'
        p = _write(tmp_path, name, b"\xef\xbb\xbf" + body)
        res = convert_dump(p, tmp_path / "root", progress=False)
        assert res.memories == 1


def test_format_version_1_accepted_and_kept(tmp_path):
    p = _write(tmp_path, "v1.json", b'{"format_version": 1, "memories": [{"id":"a","text":"t"}]}')
    res = convert_dump(p, tmp_path / "r", progress=False)
    assert open_snapshot(res.path).header() == {"format_version": 1}
    assert res.tenant == "v1"  # no tenant in the dump: the file stem


def test_jsonl_header_rule(tmp_path):
    lines = [
        {"tenant": "jl", "collections": ["a"], "other": [1, 2]},
        {"id": "a", "text": "t"},
        {"tenant": "late"},  # not first: a memory without id -> rejected
    ]
    p = _write(tmp_path, "x.jsonl", b"\n".join(json.dumps(x).encode() for x in lines))
    src = open_dump(p)
    assert src.header == {"tenant": "jl", "other": [1, 2]} and src.collections == ["a"]
    res = convert_dump(p, tmp_path / "r", progress=False)
    assert (res.tenant, res.memories, res.rejected) == ("jl", 1, 1)
    # a first line with an id is a memory, even with header-looking keys
    q = _write(tmp_path, "m.jsonl", b'{"id": "m", "text": "t", "tenant": "x"}\n')
    assert open_dump(q).header == {}
    assert convert_dump(q, tmp_path / "r", progress=False).memories == 1


@pytest.mark.parametrize("suffix", [".json", ".json.gz", ".json.zst"])
def test_streaming_json_matches_whole_file(tmp_path, suffix):
    dump = {
        "before": {"x": [1, 2.5, 10**25]},
        "tenant": "s",
        "memories": [{"id": f"i{i}", "text": "t", "metadata": {"v": 0.1 * i}} for i in range(30)]
        + [7],
        "collections": ["c1"],
        "after": "end",
    }
    body = b"\xef\xbb\xbf" + json.dumps(dump, indent=1).encode()
    if suffix == ".json.gz":
        body = gzip.compress(body)
    elif suffix == ".json.zst":
        import zstandard

        body = zstandard.ZstdCompressor().compress(body)
    p = _write(tmp_path, "s" + suffix, body)
    a = open_snapshot(convert_dump(p, tmp_path / "a", progress=False, stream=False).path)
    b = open_snapshot(convert_dump(p, tmp_path / "b", progress=False, stream=True).path)
    assert (
        a.header()
        == b.header()
        == {"before": {"x": [1, 2.5, 10**25]}, "tenant": "s", "after": "end"}
    )
    assert a.to_dump() == b.to_dump()
    assert a.counts == b.counts == {"memories": 30, "collections": 1, "rejected": 1}


def test_strict_mode_writes_nothing(tmp_path):
    p = _write(tmp_path, "s.json", json.dumps({"memories": [GOOD, GOOD]}).encode())
    with pytest.raises(BadInput, match=r"row 1 field id: duplicate id .*strict"):
        convert_dump(p, tmp_path / "root", strict=True, progress=False)
    assert os.listdir(tmp_path / "root") == []


def test_batches_api_for_other_readers(tmp_path):
    """``open_dump(...).batches()`` (used by local seeding) gives raw rows and whole-file errors."""
    good = _write(tmp_path, "g.json", json.dumps({"memories": [GOOD, 5]}).encode())
    [(start, raws)] = list(open_dump(good).batches())
    assert start == 0 and [json.loads(bytes(r)) for r in raws] == [GOOD, 5]
    broken = _write(tmp_path, "b.jsonl", b'{"id": "a", "text": "t"}\n{"id": \n')
    with pytest.raises(BadInput, match="line 2"):
        list(open_dump(broken).batches())


def test_a_rejected_row_does_not_reserve_its_id():
    rows = [
        {"id": "x", "text": "t", "created_at": "not a time"},
        {"id": "x", "text": "second, valid"},
        {"id": "x", "text": "third: the duplicate"},
    ]
    good, rejected = normalize_memories(rows)
    assert good.column("text").to_pylist() == ["second, valid"]
    assert rejected.column("row_index").to_pylist() == [0, 2]
    assert rejected.column("field").to_pylist() == ["created_at", "id"]

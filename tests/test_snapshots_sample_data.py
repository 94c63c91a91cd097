"""The committed sample dumps: every valid one round-trips losslessly; every bad file is refused."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from cli_support import run_cli

from longmem_etl import jsonio
from longmem_etl.dumps.compare import dump_differences
from longmem_etl.snapshots import convert_dump, open_snapshot
from longmem_etl.snapshots.dump import write_dump

SAMPLES = Path(__file__).resolve().parents[1] / "longmem_etl" / "sample_data"
VALID = sorted(
    p.name
    for p in SAMPLES.iterdir()
    if p.is_file() and any(p.name.endswith(s) for s in (".json", ".jsonl", ".gz", ".zst"))
)
BAD = sorted(
    p.name for p in (SAMPLES / "bad").iterdir() if p.is_file() and p.name != "bad-rows.json"
)


def load_original(path: Path) -> dict:
    """The dump as plain JSON values, read independently of the converter."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    data = data.removeprefix(b"\xef\xbb\xbf")
    if ".jsonl" in path.name:
        lines = [ln for ln in data.splitlines() if ln.strip()]
        header = jsonio.loads(lines[0])
        return {**header, "memories": [jsonio.loads(x) for x in lines[1:]]}
    return jsonio.loads(data)


def test_sample_data_is_there():
    assert "acme.json" in VALID and "globex-dirty.json" in VALID
    assert len(BAD) >= 8


@pytest.mark.parametrize("name", VALID)
def test_valid_sample_roundtrips_losslessly(tmp_path, name):
    src = SAMPLES / name
    original = load_original(src)
    res = convert_dump(src, tmp_path / "root", progress=False)
    assert res.rejected == 0
    assert res.memories == len(original["memories"])
    snap = open_snapshot(res.path)
    assert dump_differences(original, snap.to_dump()) == []
    for ext in (".json", ".jsonl.gz"):
        out = tmp_path / f"back{ext}"
        write_dump(res.path, out)
        assert dump_differences(original, load_original(out)) == [], ext


def test_small_variants_give_the_same_snapshot_content(tmp_path):
    tables = []
    for name in [n for n in VALID if n.startswith("acme-small") or n == "bom.json"]:
        res = convert_dump(SAMPLES / name, tmp_path / name, progress=False)
        snap = open_snapshot(res.path)
        tables.append((name, snap.read_memories(), snap.collections(), snap.header()))
    first = tables[0]
    for name, t, c, h in tables[1:]:
        assert t.equals(first[1]), name
        assert (c, h) == (first[2], first[3]), name


def test_dirty_sample_keeps_unknown_fields_and_exact_numbers(tmp_path):
    res = convert_dump(SAMPLES / "globex-dirty.json", tmp_path / "root", progress=False)
    t = open_snapshot(res.path).read_memories()
    extras = [e for e in t.column("extra").to_pylist() if e]
    assert len(extras) >= 100
    assert any("unicode_kind" in e for e in extras)
    fid = [f for f in t.column("fidelity").to_pylist() if f]
    assert any('"absent"' in f for f in fid)


def test_bad_rows_file_converts_with_rejections(tmp_path):
    res = convert_dump(SAMPLES / "bad" / "bad-rows.json", tmp_path / "root", progress=False)
    assert (res.memories, res.rejected) == (6, 17)
    rej = open_snapshot(res.path).read_rejected()
    assert rej is not None and rej.num_rows == 17
    assert set(rej.column("stage").to_pylist()) == {"convert"}


@pytest.mark.parametrize("name", BAD + ["bad-rows.json --strict"])
def test_bad_file_cli_exit_2_one_line_nothing_left(tmp_path, name):
    fname, *flags = name.split()
    src = SAMPLES / "bad" / fname
    root = tmp_path / "root"
    r = run_cli("convert", str(src), "--root", str(root), *flags)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(src) in lines[0] and "Traceback" not in r.stderr
    assert not root.exists() or os.listdir(root) == []

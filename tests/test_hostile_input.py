"""The bad-input corpus (``tests/hostile_corpus.py``, 30+ hostile files) through the real CLI: every
file is a rejected row with a reason, or exit 2 with one line; never an internal error or a
traceback, and nothing half-written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_support import run_cli
from hostile_corpus import CORPUS

from longmem_etl.snapshots.layout import list_snapshots


def convert(path: Path, root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_cli("convert", str(path), "--root", str(root), "--json", *flags)


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 21


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_file(name: str, tmp_path: Path) -> None:
    fname, make, flags, (outcome, words) = CORPUS[name]
    path = tmp_path / fname
    path.write_bytes(make())
    root = tmp_path / "root"
    r = convert(path, root, *flags)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    if outcome == "bad":
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and words in lines[0], r.stderr
        assert (
            list_snapshots(root) == [] and not list(root.glob(".tmp-*")) if root.exists() else True
        )
        return
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    snap = list_snapshots(root)[-1]
    if outcome == "ok":
        assert result["rejected"] == 0
        return
    assert result["rejected"] >= 1 and result["memories"] >= 1  # the good row survives
    import pyarrow.parquet as pq

    reasons = pq.read_table(snap / "rejected.parquet").column("reason").to_pylist()
    assert all(reasons) and any(words in reason for reason in reasons), reasons
    # and the snapshot reads back: sql over it, and a dump of it
    q = run_cli("sql", "SELECT count(*) FROM memories", "--root", str(root))
    assert q.returncode == 0, q.stderr


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_row_through_convert_worker_processes(depth: int, tmp_path: Path, monkeypatch) -> None:
    """convert's worker processes (forced on for a small file): the deep row is rejected with its
    reason and the snapshot equals the serial one."""
    from longmem_etl.snapshots import convert as conv
    from longmem_etl.snapshots import parallel

    rows = [b'{"id":"r%d","text":"t%d","metadata":{"i":%d}}' % (i, i, i) for i in range(300)]
    rows.insert(150, b'{"id":"deep","text":"t","metadata":' + b"[" * depth + b"]" * depth + b"}")
    path = tmp_path / "w.json"
    path.write_bytes(b'{"format_version":1,"tenant":"w","memories":[' + b",".join(rows) + b"]}")
    serial = conv.convert_dump(path, tmp_path / "serial", progress=False)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(conv, "SPAN_BYTES", 2048)
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    res = conv.convert_dump(path, tmp_path / "par", progress=False)
    assert (res.memories, res.rejected) == (serial.memories, serial.rejected) == (300, 1)
    import pyarrow.parquet as pq

    rej = pq.read_table(res.path / "rejected.parquet").to_pylist()
    assert rej[0]["id"] == "deep" and "nested deeper" in rej[0]["reason"]
    assert pq.read_table(res.path / "memories.parquet").equals(
        pq.read_table(serial.path / "memories.parquet")
    )

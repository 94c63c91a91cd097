"""The bad-input corpus (``tests/hostile_corpus.py``, 30+ hostile files) through the real CLI: every
file is a rejected row with a reason, or exit 2 with one line; never an internal error or a
traceback, and nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_corpus import CORPUS

from longmem_etl.snapshots.layout import list_snapshots


def convert(path: Path, root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "longmem_etl.cli.main",
            "convert",
            str(path),
            "--root",
            str(root),
            "--json",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


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
    q = subprocess.run(
        [
            sys.executable,
            "-m",
            "longmem_etl.cli.main",
            "sql",
            "SELECT count(*) FROM memories",
            "--root",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert q.returncode == 0, q.stderr

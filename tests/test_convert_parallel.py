"""convert's worker processes (whole-file .json, chunks dealt round-robin): the snapshot is the one
the serial path writes, worker errors surface as they would serially, a dead worker costs only
speed. Real worker processes throughout (started with subprocess, as in production)."""

from __future__ import annotations

import json
import os
import sys

import pyarrow.parquet as pq
import pytest

from longmem_etl.errors import BadInput
from longmem_etl.snapshots import convert_dump, parallel

BATCH = 10  # rows per chunk: with 2 workers, chunk k (rows 10k..10k+9) goes to worker k % 2


def _rows() -> list:
    rows = []
    for i in range(95):
        row = {"id": f"m{i}", "text": f"memory {i}", "importance": i / 100}
        if i % 7 == 0:
            row["metadata"] = {"n": i, "big": 10**30, "nested": [1, {"a": None}]}
        if i % 5 == 0:
            row["created_at"] = "2025-06-07T21:51:33.193660Z"
        rows.append(row)
    # rejected for their own sake, in both workers' chunks
    rows[3] = {"id": "m3", "text": 123}
    rows[14] = {"id": "m14", "text": "t", "created_at": "not a time"}
    rows[25] = "not an object"
    rows[36] = {"id": "", "text": "empty id"}
    rows[47] = {"text": "no id"}
    rows[58] = {"id": "m58", "text": "t", "importance": "high"}
    # duplicate ids across chunks (so across workers): first seen in worker 1's chunk 1, repeated in
    # worker 0's chunk 2 ...
    rows[22] = {"id": "m12", "text": "dup of a worker-chunk row (chunk 1) in chunk 2"}
    # ... first seen in worker 0's chunk 2, repeated in worker 1's chunk 3
    rows[33] = {"id": "m21", "text": "dup of chunk 2's row in chunk 3"}
    # repeated inside one worker chunk, and an id whose first row was rejected (not reserved)
    rows[55] = {"id": "m54", "text": "dup inside chunk 5"}
    rows[71] = {"id": "m3", "text": "m3's first row was rejected, so this one is kept"}
    rows[90] = {"id": "m3", "text": "dup of a kept repeat"}
    return rows


@pytest.fixture
def dump(tmp_path):
    path = tmp_path / "par.json"
    path.write_text(
        json.dumps(
            {"format_version": 1, "tenant": "par", "collections": ["a"], "memories": _rows()}
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def answered(monkeypatch):
    """Force two workers on for small files; count the chunks they answered."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setenv(parallel.WORKERS_ENV, "2")
    seen = []
    real = parallel.Worker.result

    def result(self):
        value = real(self)
        if value is not None:
            seen.append(value)
        return value

    monkeypatch.setattr(parallel.Worker, "result", result)
    return seen


def _snapshot(res) -> dict:
    out = {"result": (res.memories, res.rejected, res.collections, res.rejected_reasons)}
    for name in sorted(os.listdir(res.path)):
        if name.endswith(".parquet"):
            out[name] = pq.read_table(res.path / name)
    return out


def _serial(dump, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv(parallel.WORKERS_ENV, "0")
        return _snapshot(convert_dump(dump, tmp_path / "serial", progress=False, batch_size=BATCH))


def test_parallel_snapshot_equals_serial(dump, tmp_path, monkeypatch, answered):
    serial = _serial(dump, tmp_path, monkeypatch)
    assert not answered  # LONGMEM_ETL_CONVERT_WORKERS=0: no worker
    res = convert_dump(dump, tmp_path / "par", progress=False, batch_size=BATCH)
    assert len(answered) == 10  # every chunk came from a worker
    par = _snapshot(res)
    assert set(par) == set(serial) and "rejected.parquet" in par
    for key in serial:
        assert par[key] == serial[key] if key == "result" else par[key].equals(serial[key]), key
    memories, rejected, _, reasons = par["result"]
    assert memories + rejected == 95 and rejected == 10
    assert reasons.get("duplicate") == 4
    ids = par["memories.parquet"].column("id").to_pylist()
    assert len(ids) == len(set(ids)) and "m3" in ids


def test_worker_error_surfaces_as_bad_input_and_leaves_nothing(
    dump, tmp_path, monkeypatch, answered
):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from longmem_etl.errors import BadInput\n"
        "from longmem_etl.snapshots import parallel\n"
        "def work(data, size, start, *rest):\n"
        "    if start == 30:\n"
        "        raise BadInput(f'{sys.argv[2]}: row {start}: this chunk breaks')\n"
        "    return parallel.work(data, size, start, *rest)\n"
        "parallel.worker_main(sys.argv[2], work)\n"
    )
    real = parallel.worker_command
    monkeypatch.setattr(
        parallel, "worker_command", lambda path: [sys.executable, "-c", code, *real(path)[3:]]
    )
    root = tmp_path / "root"
    with pytest.raises(BadInput) as err:
        convert_dump(dump, root, progress=False, batch_size=BATCH)
    assert str(err.value) == f"{dump}: row 30: this chunk breaks"
    assert len(answered) == 3  # chunks 0-2 were answered, chunk 3 broke
    assert not root.exists() or os.listdir(root) == []  # no snapshot dir, no .tmp-* dir


def test_dead_worker_falls_back_to_serial(dump, tmp_path, monkeypatch, answered):
    serial = _serial(dump, tmp_path, monkeypatch)
    monkeypatch.setattr(parallel, "worker_command", lambda path: [sys.executable, "-c", "pass"])
    par = _snapshot(convert_dump(dump, tmp_path / "par", progress=False, batch_size=BATCH))
    assert not answered
    for key in serial:
        assert par[key] == serial[key] if key == "result" else par[key].equals(serial[key]), key


def test_one_worker_and_three_workers_give_the_same_snapshot(dump, tmp_path, monkeypatch, answered):
    serial = _serial(dump, tmp_path, monkeypatch)
    for n in ("1", "3"):
        monkeypatch.setenv(parallel.WORKERS_ENV, n)
        par = _snapshot(convert_dump(dump, tmp_path / f"par{n}", progress=False, batch_size=BATCH))
        for key in serial:
            assert par[key] == serial[key] if key == "result" else par[key].equals(serial[key]), key
    assert len(answered) == 20


def test_workers_off_for_small_streamed_compressed_or_switched_off(dump, tmp_path, monkeypatch):
    assert parallel.start_workers(dump, None) == []  # smaller than PARALLEL_MIN_BYTES
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv(parallel.WORKERS_ENV, raising=False)
    assert parallel.start_workers(dump, True) == []  # streamed
    gz = tmp_path / "par.json.gz"
    gz.write_bytes(b"")
    assert parallel.start_workers(gz, None) == []  # compressed
    monkeypatch.setenv(parallel.WORKERS_ENV, "0")
    assert parallel.start_workers(dump, None) == []
    for bad in ("many", "-1", "99"):
        monkeypatch.setenv(parallel.WORKERS_ENV, bad)
        with pytest.raises(BadInput, match=parallel.WORKERS_ENV):
            convert_dump(dump, tmp_path / "x", progress=False)
    monkeypatch.delenv(parallel.WORKERS_ENV)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert parallel.start_workers(dump, None) == []  # one CPU: no workers by default
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    workers = parallel.start_workers(dump, None)
    assert len(workers) == parallel.MAX_DEFAULT_WORKERS
    parallel.close_workers(workers)

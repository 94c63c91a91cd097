"""convert's worker processes (whole-file .json): the snapshot has the content the serial path
writes, whether the spans were guessed (no full scan) or exact (after one); a guess that is not a
boundary is caught and redone; worker errors surface as they would serially; a dead worker costs
only speed. Real worker processes throughout (started with subprocess, as in production)."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import pyarrow.parquet as pq
import pytest

from longmem_etl.dumps import read
from longmem_etl.errors import BadInput
from longmem_etl.snapshots import convert, convert_dump, parallel

BATCH = 10  # rows per exact chunk: with 2 workers, chunk k (rows 10k..10k+9) goes to worker k % 2
SPAN = 600  # bytes per guessed span: ~10 rows of the dump below


def _rows() -> list:
    rows = []
    for i in range(95):
        row = {"id": f"m{i}", "text": f"memory {i}", "importance": i / 100}
        if i % 7 == 0:
            row["metadata"] = {"n": i, "big": 10**30, "nested": [1, {"a": None}]}
        if i % 5 == 0:
            row["created_at"] = "2025-06-07T21:51:33.193660Z"
        if (
            i % 9 == 0
        ):  # a separator-like text: cannot fool the boundary guess (its quotes are escaped)
            row["text"] = 'x"}, {"id": "fake", "text": "y'
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


def _write(path, memories, **dump_kwargs) -> None:
    doc = {"format_version": 1, "tenant": "par", "collections": ["a"], "memories": memories}
    path.write_text(json.dumps(doc, **dump_kwargs), encoding="utf-8")


@pytest.fixture
def dump(tmp_path):
    path = tmp_path / "par.json"
    _write(path, _rows())
    return path


@pytest.fixture
def answered(monkeypatch):
    """Force two workers on for small files, with small guessed spans; collect their answers."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(convert, "SPAN_BYTES", SPAN)
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


@pytest.fixture
def no_guess(monkeypatch):
    """Exact spans only (the path taken after a full scan)."""
    monkeypatch.setattr(convert, "guess_json_spans", lambda path, span_bytes: None)


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


def _assert_same(par: dict, serial: dict) -> None:
    assert set(par) == set(serial)
    for key in serial:
        assert par[key] == serial[key] if key == "result" else par[key].equals(serial[key]), key


def test_guessed_spans_give_the_serial_snapshot(dump, tmp_path, monkeypatch, answered):
    serial = _serial(dump, tmp_path, monkeypatch)
    assert not answered  # LONGMEM_ETL_CONVERT_WORKERS=0: no worker
    guessed = read.guess_json_spans(str(dump), SPAN)
    assert guessed is not None and len(guessed.spans) >= 6
    par = _snapshot(convert_dump(dump, tmp_path / "par", progress=False, batch_size=BATCH))
    assert len(answered) == len(guessed.spans)  # every span came from a worker
    _assert_same(par, serial)
    assert convert_dump(dump, tmp_path / "again", progress=False).workers == 2
    assert "rejected.parquet" in par
    memories, rejected, _, reasons = par["result"]
    assert memories + rejected == 95 and rejected == 10
    assert reasons.get("duplicate") == 4
    ids = par["memories.parquet"].column("id").to_pylist()
    assert len(ids) == len(set(ids)) and "m3" in ids and "fake" not in ids


def test_exact_spans_give_the_serial_snapshot(dump, tmp_path, monkeypatch, answered, no_guess):
    serial = _serial(dump, tmp_path, monkeypatch)
    par = _snapshot(convert_dump(dump, tmp_path / "par", progress=False, batch_size=BATCH))
    assert len(answered) == 10  # chunks of BATCH rows, all from workers
    _assert_same(par, serial)


@pytest.mark.parametrize(
    "kwargs", [{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False}]
)
def test_guessed_spans_cover_exactly_the_memories(tmp_path, kwargs):
    path = tmp_path / "d.json"
    rows = _rows()
    _write(path, rows, **kwargs)
    src = read.guess_json_spans(str(path), 300)
    assert (
        src is not None and not src.exact and src.header == {"format_version": 1, "tenant": "par"}
    )
    parsed = [
        json.loads(bytes(raw)) for span in src.spans for raw in read.span_raws(src.data, span)
    ]
    assert parsed == rows


def test_a_guess_inside_a_memory_is_caught_and_redone(tmp_path, monkeypatch, answered):
    # every memory holds a list of objects written exactly like the memories list itself, so a
    # guessed boundary often lands inside a memory; such a span does not parse and the whole dump is
    # redone with exact spans (fresh workers: the old ones may hold answers for the bad spans)
    path = tmp_path / "nested.json"
    rows = [
        {"id": f"n{i}", "text": f"t{i}", "metadata": {"refs": [{"id": f"r{i}"}, {"id": "s"}]}}
        for i in range(60)
    ]
    _write(path, rows, separators=(",", ":"))
    guessed = read.guess_json_spans(str(path), 200)
    assert guessed is not None
    with pytest.raises(read.Misplaced):
        for span in guessed.spans:
            read.span_raws(guessed.data, span)
    serial = _serial(path, tmp_path, monkeypatch)
    started = []
    real_start = convert.start_workers
    monkeypatch.setattr(convert, "start_workers", lambda *a: started.append(1) or real_start(*a))
    monkeypatch.setattr(convert, "SPAN_BYTES", 200)
    res = convert_dump(path, tmp_path / "par", progress=False, batch_size=BATCH)
    assert len(started) == 2  # redone once
    _assert_same(_snapshot(res), serial)
    assert res.memories == 60
    # the abandoned first attempt left nothing behind: one tenant dir, one snapshot in it
    assert [p.name for p in (tmp_path / "par").iterdir()] == [res.path.parent.name]
    assert list(res.path.parent.iterdir()) == [res.path]


def test_whole_file_problems_are_the_serial_ones(tmp_path, monkeypatch, answered):
    bad_end = tmp_path / "bad_end.json"
    text = json.dumps({"format_version": 1, "memories": _rows()})
    bad_end.write_text(text[:-200] + "}, oops ]}", encoding="utf-8")
    strict_bad = tmp_path / "strict.json"
    _write(strict_bad, _rows())
    for path, strict in ((bad_end, False), (strict_bad, True)):
        with monkeypatch.context() as m:
            m.setenv(parallel.WORKERS_ENV, "0")
            with pytest.raises(BadInput) as serial_err:
                convert_dump(path, tmp_path / "s", progress=False, strict=strict)
        root = tmp_path / f"root-{path.stem}"
        with pytest.raises(BadInput) as err:
            convert_dump(path, root, progress=False, strict=strict)
        assert str(err.value) == str(serial_err.value)
        assert not root.exists() or os.listdir(root) == []  # no snapshot dir, no .tmp-* dir


@pytest.mark.parametrize(
    "doc",
    [
        b'{"memories": [{"id": "a", "text": "x"}], "format_version": 1}',  # memories not last
        b'{"note": "\\"memories\\": [", "memories": [{"id": "a", "text": "x"}]}',  # in a string
        b'{"memories": []}',
        b'{"memories": [  ]}',
    ],
)
def test_unusual_shapes_are_read_exactly(tmp_path, doc, monkeypatch, answered):
    path = tmp_path / "odd.json"
    path.write_bytes(doc)
    serial = _serial(path, tmp_path, monkeypatch)
    par = _snapshot(convert_dump(path, tmp_path / "par", progress=False))
    _assert_same(par, serial)


def test_worker_error_surfaces_as_bad_input_and_leaves_nothing(
    dump, tmp_path, monkeypatch, answered, no_guess
):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from longmem_etl.errors import BadInput\n"
        "from longmem_etl.snapshots import parallel\n"
        "calls = []\n"
        "def work(*args):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:  # this worker's second span: chunk 2 or 3\n"
        "        raise BadInput(f'{sys.argv[2]}: this chunk breaks')\n"
        "    return parallel.work(*args)\n"
        "parallel.worker_main(sys.argv[2], work)\n"
    )
    real = parallel.worker_command
    monkeypatch.setattr(
        parallel, "worker_command", lambda path: [sys.executable, "-c", code, *real(path)[3:]]
    )
    root = tmp_path / "root"
    with pytest.raises(BadInput) as err:
        convert_dump(dump, root, progress=False, batch_size=BATCH)
    assert str(err.value) == f"{dump}: this chunk breaks"
    assert len(answered) == 2  # chunks 0 and 1 were answered, chunk 2 broke
    assert not root.exists() or os.listdir(root) == []  # no snapshot dir, no .tmp-* dir


def test_dead_worker_falls_back_to_serial(dump, tmp_path, monkeypatch, answered):
    serial = _serial(dump, tmp_path, monkeypatch)
    monkeypatch.setattr(parallel, "worker_command", lambda path: [sys.executable, "-c", "pass"])
    res = convert_dump(dump, tmp_path / "par", progress=False, batch_size=BATCH)
    par = _snapshot(res)
    assert not answered and res.workers == 0
    _assert_same(par, serial)


def test_one_worker_and_three_workers_give_the_same_snapshot(dump, tmp_path, monkeypatch, answered):
    serial = _serial(dump, tmp_path, monkeypatch)
    for n in ("1", "3"):
        monkeypatch.setenv(parallel.WORKERS_ENV, n)
        par = _snapshot(convert_dump(dump, tmp_path / f"par{n}", progress=False, batch_size=BATCH))
        _assert_same(par, serial)
    assert len(answered) >= 12


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


def test_above_the_streaming_threshold_workers_read_spans_and_release_them(
    dump, tmp_path, monkeypatch, answered
):
    serial = _serial(dump, tmp_path, monkeypatch)
    monkeypatch.setattr(read, "STREAM_THRESHOLD_BYTES", 0)  # every file counts as big
    res = convert_dump(dump, tmp_path / "par", progress=False)
    assert answered and not res.streamed  # worker spans, not ijson
    _assert_same(_snapshot(res), serial)


def test_above_the_threshold_a_misplaced_guess_falls_back_to_streaming(
    tmp_path, monkeypatch, answered
):
    path = tmp_path / "nested.json"
    rows = [
        {"id": f"n{i}", "text": f"t{i}", "metadata": {"refs": [{"id": f"r{i}"}, {"id": "s"}]}}
        for i in range(60)
    ]
    _write(path, rows, separators=(",", ":"))
    serial = _serial(path, tmp_path, monkeypatch)
    monkeypatch.setattr(read, "STREAM_THRESHOLD_BYTES", 0)
    monkeypatch.setattr(convert, "SPAN_BYTES", 200)
    res = convert_dump(path, tmp_path / "par", progress=False)
    assert res.streamed  # the bounded fallback, not a whole-file scan
    _assert_same(_snapshot(res), serial)


def test_released_pages_read_back_the_same(dump):
    src = read.guess_json_spans(str(dump), SPAN)
    before = [[bytes(r) for r in read.span_raws(src.data, span)] for span in src.spans]
    for span in src.spans:
        read.release(src.data, span)
    after = [[bytes(r) for r in read.span_raws(src.data, span)] for span in src.spans]
    assert after == before and sum(map(len, after)) == 95


def test_a_bom_and_crlf_layout_give_the_serial_snapshot(tmp_path, monkeypatch, answered):
    path = tmp_path / "bom.json"
    text = json.dumps({"format_version": 1, "memories": _rows()}, indent=1)
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    serial = _serial(path, tmp_path, monkeypatch)
    guessed = read.guess_json_spans(str(path), SPAN)
    assert guessed is not None and len(guessed.spans) > 3
    for span in guessed.spans:  # offsets are into the file without its BOM, in every process
        read.release(guessed.data, span)
    res = convert_dump(path, tmp_path / "par", progress=False)
    assert len(answered) == len(guessed.spans)
    _assert_same(_snapshot(res), serial)


@pytest.mark.parametrize("suffix", [".json.gz", ".json.zst"])
def test_a_compressed_dump_is_decompressed_for_the_workers(
    dump, tmp_path, monkeypatch, answered, suffix
):
    import gzip

    import zstandard

    packed = tmp_path / f"packed{suffix}"
    raw = dump.read_bytes()
    packed.write_bytes(
        gzip.compress(raw) if suffix == ".json.gz" else zstandard.ZstdCompressor().compress(raw)
    )
    serial = _serial(packed, tmp_path, monkeypatch)
    root = tmp_path / "par"
    res = convert_dump(packed, root, progress=False)
    assert len(answered) >= 6  # the workers mapped the temp copy
    _assert_same(_snapshot(res), serial)
    assert res.source == str(packed)  # the user's file, not the copy
    assert sorted(p.name for p in root.iterdir()) == ["tenant=par"]  # the copy is gone


@pytest.mark.parametrize(
    "content", [b"\x1f\x8b\x08\x00not really gzip", b""], ids=["corrupt", "empty"]
)
def test_a_bad_compressed_dump_gives_the_serial_error(tmp_path, monkeypatch, answered, content):
    import gzip

    packed = tmp_path / "bad.json.gz"
    packed.write_bytes(content if content else gzip.compress(b""))
    with monkeypatch.context() as m:
        m.setenv(parallel.WORKERS_ENV, "0")
        with pytest.raises(BadInput) as serial_err:
            convert_dump(packed, tmp_path / "s", progress=False)
    root = tmp_path / "par"
    with pytest.raises(BadInput) as err:
        convert_dump(packed, root, progress=False)
    assert str(err.value) == str(serial_err.value) and str(packed) in str(err.value)
    assert not root.exists() or os.listdir(root) == []


def test_killing_convert_leaves_no_worker_behind_and_the_next_run_sweeps(dump, tmp_path):
    """SIGKILL the converting process mid-way: its workers see their stdin close and exit, and the
    next writer on the root removes the temp dir it left (its owner lock is gone)."""
    import signal
    import subprocess
    import time

    code = (
        "import sys, time\n"
        "from longmem_etl.snapshots import convert, parallel\n"
        "parallel.PARALLEL_MIN_BYTES = 0\n"
        "convert.SPAN_BYTES = 300\n"
        "real = parallel.Worker.result\n"
        "def slow(self):\n"
        "    print('working', flush=True)\n"
        "    time.sleep(0.5)\n"
        "    return real(self)\n"
        "parallel.Worker.result = slow\n"
        # each span takes the workers 0.2 s more: they cannot answer the whole file and exit
        # (a zombie with an empty cmdline) before they are looked at, however busy the machine
        "real_command = parallel.worker_command\n"
        "def slow_worker(path):\n"
        "    cmd = real_command(path)\n"
        "    cmd[2] = cmd[2].replace('worker_main(sys.argv[2])', "
        '\'worker_main(sys.argv[2], do=lambda *a: (__import__("time").sleep(0.2), '
        '__import__("longmem_etl.snapshots.parallel").snapshots.parallel.work(*a))[1])\')\n'
        "    assert 'do=' in cmd[2], cmd\n"
        "    return cmd\n"
        "parallel.worker_command = slow_worker\n"
        "convert.convert_dump(sys.argv[1], sys.argv[2], progress=False)\n"
    )
    env = {**os.environ, parallel.WORKERS_ENV: "2"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(dump), str(tmp_path / "root")],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout.readline() == b"working\n"  # workers are up and answering
    kids = []
    for task in os.listdir(f"/proc/{proc.pid}/task"):
        with open(f"/proc/{proc.pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    assert len(kids) == 2
    for k in kids:
        with open(f"/proc/{k}/cmdline", "rb") as f:
            assert b"worker_main" in f.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{k}") for k in kids) and time.monotonic() < deadline:
        for k in kids:  # reap them if they were ours (they are not: their parent is gone)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(k, os.WNOHANG)
        time.sleep(0.05)
    alive = []
    for k in kids:
        try:
            with open(f"/proc/{k}/stat") as f:
                if f.read().split()[2] != "Z":
                    alive.append(k)
        except FileNotFoundError:
            pass
    assert alive == []
    root = tmp_path / "root"
    left = list(root.glob(".tmp-*"))
    assert len(left) == 1 and (left[0] / ".owner").exists()
    res = convert_dump(dump, root, progress=False)
    assert not list(root.glob(".tmp-*")) and not (res.path / ".owner").exists()

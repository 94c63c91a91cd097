"""Normalising a big dump in worker processes, so that both CPUs decode.

Decoding JSON into columns is CPU-bound Python (msgspec, then Arrow), so threads cannot share it.
``convert`` therefore starts worker processes for a big dump:

- each worker is a fresh interpreter started with ``subprocess`` (not ``fork``, which is unsafe
  when the caller has threads, as Dagster's workers do; not multiprocessing's spawn/forkserver,
  which re-run the caller's ``__main__``); it imports and warms up while this process reads the
  header;
- a ``.json`` is mapped by every worker, which gets byte spans (``dumps.read.Span``, guessed or
  exact) and drops each span's pages once done, so memory stays bounded; a compressed ``.json`` is
  first decompressed to a temp file (``decompressed_copy``); JSONL stays in one process;
- each answer is the chunk's Arrow batch (IPC, sent as an out-of-band buffer: never pickled), its
  ids and row problems; chunks are dealt round-robin and consumed here in dump order, and this
  process keeps the one step that needs every chunk (duplicate ids across chunks,
  ``Normalizer.finish``) and the Parquet writer, so the snapshot has the serial one's content;
- a worker's error is re-raised here as it is (the same one-line ``BadInput``); a worker that cannot
  start or dies only costs speed: its chunks are done here.

``LONGMEM_ETL_CONVERT_WORKERS`` sets the number of workers: ``0`` turns them off; unset means one
per CPU up to ``MAX_DEFAULT_WORKERS`` (none on a single CPU).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import pyarrow as pa

from longmem_etl.dumps.normalize import BadRow, Normalizer, local_chunk
from longmem_etl.dumps.read import (
    Chunk,
    DumpSource,
    Span,
    bracketed,
    dump_format,
    open_binary,
    read_all_bytes,
    release,
    span_raws,
)
from longmem_etl.errors import BadInput
from longmem_etl.snapshots.temps import new_owned_dir

PARALLEL_MIN_BYTES = 64 << 20  # below this, starting interpreters costs more than it saves
WORKERS_ENV = "LONGMEM_ETL_CONVERT_WORKERS"
MAX_DEFAULT_WORKERS = 2
MAX_WORKERS = 16
AHEAD_PER_WORKER = 3  # chunks asked for ahead of the one being consumed, per worker

# --------------------------------------------------------------------------------------------------
# Framing: a pickled header plus out-of-band buffers (protocol 5), so Arrow data is never pickled


def _send(f: BinaryIO, obj: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    head = struct.pack(f"<QI{len(raws)}Q", len(meta), len(raws), *(r.nbytes for r in raws))
    f.write(head)
    f.write(meta)
    for r in raws:
        f.write(r)
    f.flush()


def _read_exact(f: BinaryIO, n: int) -> bytearray:
    out = bytearray(n)
    view, got = memoryview(out), 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise EOFError
        got += k
    return out


def _recv(f: BinaryIO) -> Any:
    n_meta, n_bufs = struct.unpack("<QI", _read_exact(f, 12))
    sizes = struct.unpack(f"<{n_bufs}Q", _read_exact(f, 8 * n_bufs)) if n_bufs else ()
    meta = _read_exact(f, n_meta)
    return pickle.loads(meta, buffers=[_read_exact(f, n) for n in sizes])


# --------------------------------------------------------------------------------------------------
# The worker's side


def work(
    data: Any, size: int, first: int, end: int, count: int | None
) -> tuple[pickle.PickleBuffer, list[str], list[tuple[int, str | None, str]]]:
    """``local_chunk`` of the memories in ``Span(first, end, count)`` of the mapped file:
    ``(Arrow IPC stream of the batch, ids, [(row in span, field, reason)])``."""
    if len(data) != size:
        raise BadInput("the dump file changed while it was being converted")
    span = Span(first, end, count)
    batch, ids, bad = span_chunk(data, span)
    release(data, span)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as out:
        out.write_batch(batch)
    problems = [(i, b.field, b.reason) for i, b in bad.items()]
    return pickle.PickleBuffer(sink.getvalue()), ids, problems


def span_chunk(data: Any, span: Span) -> tuple[pa.RecordBatch, list[str], dict[int, BadRow]]:
    """``local_chunk`` of one span (row indexes relative to the span)."""
    with bracketed(data, span.first, span.end) as body:
        return local_chunk(Chunk(0, span.count, body, lambda: span_raws(data, span)))


class _NoPandas:
    """An import hook that makes ``pandas`` unavailable in a worker: pyarrow's first ``pa.array``
    imports pandas only to ask whether a list is a pandas object (~0.45 s of CPU per process);
    a worker never converts to or from pandas, so it is told there is none."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not used in a convert worker", name=name)


def _warm_up() -> None:
    """Pay one-time costs while the parent is still scanning the file."""
    if "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    pa.array(["warm"], pa.string())


def worker_main(path: str, do: Callable[..., Any] | None = None) -> None:
    """(The worker process) map ``path``, then answer requests from stdin with ``("ok", result)`` /
    ``("err", exception)`` on stdout, in order, until stdin closes. Answers are written by a
    thread, so the next chunk is decoded while the last one is still being read by the parent."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, not into the answers
    inp = os.fdopen(os.dup(0), "rb")
    do = do or work
    answers: queue.Queue[Any] = queue.Queue(maxsize=2)

    def sender() -> None:
        while (answer := answers.get()) is not None:
            try:
                _send(out, answer)
            except OSError:  # the parent is gone
                os._exit(0)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        _warm_up()
        data: Any = read_all_bytes(path)
    except BaseException as exc:  # reported with the first request
        data = exc
    while True:
        try:
            req = _recv(inp)
        except (EOFError, OSError):
            break
        try:
            if isinstance(data, BaseException):
                raise data
            answer: tuple[str, Any] = ("ok", do(data, *req))
        except Exception as exc:
            try:
                pickle.dumps(exc)
                answer = ("err", exc)
            except Exception:
                answer = ("err", RuntimeError(f"convert worker: {exc!r}"))
        answers.put(answer)
    answers.put(None)
    thread.join()
    os._exit(0)


def worker_command(path: str) -> list[str]:
    """The worker's command line (a seam for tests)."""
    root = str(Path(__file__).resolve().parents[2])
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from longmem_etl.snapshots.parallel import worker_main; worker_main(sys.argv[2])"
    )
    return [sys.executable, "-c", code, root, path]


# --------------------------------------------------------------------------------------------------
# The parent's side


class Worker:
    """The parent's end of a worker process; answers come back in request order."""

    def __init__(self, path: str) -> None:
        # the worker's own stderr only with LONGMEM_ETL_DEBUG: errors reach the user from here
        stderr = None if os.environ.get("LONGMEM_ETL_DEBUG") else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            worker_command(path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            close_fds=True,
        )
        self.broken = False

    def submit(self, req: tuple[Any, ...]) -> bool:
        if not self.broken:
            try:
                _send(self.proc.stdin, req)  # type: ignore[arg-type]
                return True
            except OSError:
                self.broken = True
        return False

    def result(self) -> Any:
        """The next answer; None when the worker is gone (its chunks are then done here)."""
        if self.broken:
            return None
        try:
            kind, value = _recv(self.proc.stdout)  # type: ignore[arg-type]
        except (EOFError, OSError, pickle.UnpicklingError, struct.error):
            self.broken = True
            return None
        if kind == "err":
            raise value
        return value

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                f.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def worker_count() -> int:
    """Workers to use, from ``LONGMEM_ETL_CONVERT_WORKERS`` (BadInput when it is not a count)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw == "":
        cpus = os.cpu_count() or 1
        return min(cpus, MAX_DEFAULT_WORKERS) if cpus >= 2 else 0
    if raw.isdigit() and int(raw) <= MAX_WORKERS:
        return int(raw)
    raise BadInput(
        f"{WORKERS_ENV}={raw!r}: expected a number of worker processes, 0 to {MAX_WORKERS}"
    )


def start_workers(path: str | os.PathLike, stream: bool | None) -> list[Worker]:
    """Workers being started (not waited for) for an uncompressed .json of ``PARALLEL_MIN_BYTES``
    or more, unless ``stream`` is True or workers are switched off; they map it, at any size
    (they release each span's pages when done). Compressed .json: see ``decompressed_copy``. JSONL
    gets none: it is the streaming path, and workers would add ~250 MB to its bounded memory for
    ~25% of speed (measured)."""
    count = worker_count()
    if not count:
        return []
    try:
        kind, compression = dump_format(path)
        size = os.path.getsize(path)
    except (BadInput, OSError):
        return []
    if kind != "json" or compression is not None or stream or size < PARALLEL_MIN_BYTES:
        return []
    workers: list[Worker] = []
    for _ in range(count):
        try:
            workers.append(Worker(os.fspath(path)))
        except OSError:
            break
    return workers


@contextlib.contextmanager
def decompressed_copy(
    path: str | os.PathLike, root: str | os.PathLike, stream: bool | None
) -> Iterator[Path | None]:
    """(Context) for a compressed .json big enough for workers: its decompressed bytes in a temp
    file under ``root`` (so workers can map it; removed on exit; a killed run's copy is swept by
    the next writer on ``root``, see ``snapshots.temps``). None when not worth it, or when the
    copy cannot be made (corrupt data, no space): the caller then reads ``path`` as before, which
    also reports any problem with ``path``'s own name."""
    try:
        kind, compression = dump_format(path)
        worth = kind == "json" and compression is not None and not stream and worker_count() > 0
        worth = worth and os.path.getsize(path) * 8 >= PARALLEL_MIN_BYTES
    except (BadInput, OSError):
        worth = False
    if not worth:
        yield None
        return
    tmp, owner = new_owned_dir(root, ".tmp-decompress-")  # a killed run's copy gets swept
    try:
        copy: Path | None = tmp / "dump.json"
        try:
            with open_binary(path) as src, open(copy, "wb") as dst:  # type: ignore[arg-type]
                shutil.copyfileobj(src, dst, 8 << 20)
        except Exception:  # noqa: BLE001 - any failure: read the original the usual way
            copy = None
        yield copy
    finally:
        owner.release()
        shutil.rmtree(tmp, ignore_errors=True)


def close_workers(workers: list[Worker]) -> None:
    for w in workers:
        w.close()


class Normalized(NamedTuple):
    """One chunk's outcome: rows read, bytes of dump read (0 when unknown), good and rejected rows."""

    rows: int
    nbytes: int
    good: pa.RecordBatch
    rejected: pa.Table


def normalized(src: DumpSource, norm: Normalizer, workers: list[Worker]) -> Iterator[Normalized]:
    """Each chunk's ``Normalized`` in dump order. With workers and a whole-file .json
    (``spans``), span k is done by worker k mod n; the spans of a worker that died, here."""
    spans = src.spans
    if not workers or spans is None:
        for chunk in src.chunks():
            good, rejected = norm.chunk(chunk)
            yield Normalized(chunk.count or 0, 0, good, rejected)
        return
    data = src.data
    owner: list[Worker | None] = [workers[k % len(workers)] for k in range(len(spans))]
    ahead = AHEAD_PER_WORKER * len(workers)
    submitted = 0  # spans before this index have been asked for (or taken back)

    def submit_until(k: int) -> None:
        nonlocal submitted
        while submitted < min(k, len(spans)):
            w, span = owner[submitted], spans[submitted]
            if w is not None and not w.submit((len(data), *span)):
                owner[submitted] = None
            submitted += 1

    start = 0  # row index of the span's first memory
    for k, span in enumerate(spans):
        submit_until(k + 1 + ahead)
        w = owner[k]
        result = w.result() if w is not None else None
        if result is not None:
            ipc, ids, problems = result
            batch = pa.ipc.open_stream(pa.py_buffer(ipc)).read_next_batch()
            bad = {j: BadRow(f, r) for j, f, r in problems}
        else:
            batch, ids, bad = span_chunk(data, span)
            release(data, span)
        good, rejected = norm.finish(
            batch, ids, bad, start, lambda span=span: span_raws(data, span)
        )
        yield Normalized(len(ids), span.end - span.first, good, rejected)
        start += len(ids)

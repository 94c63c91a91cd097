"""Dump (file or in-memory dict) -> snapshot: read, normalise in batches, write atomically.

One pipeline for both entry points: ``convert_dump`` (a file, possibly streamed) and
``snapshot_from_dump`` (the dict ``export_account`` returns, used by backup). Tenant: the explicit
argument, else the dump's ``tenant`` (a string, or an object's id/slug/name), else the file stem,
kept exactly (the folder encoding is ``layout``'s business).

Snapshot time = export time: the snapshot is named after the dump's ``exported_at`` when it parses
(and is not in the future), else the conversion time. A dump file's sha256 (hashed in a thread
while the conversion runs) goes into the manifest's ``source``; converting a file whose content a
snapshot of the tenant already holds commits nothing and returns that snapshot with
``already_present`` (checked before any row is read, and again under the tenant lock at commit).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from longmem_etl import jsonio
from longmem_etl.dumps.formats import dump_stem
from longmem_etl.dumps.normalize import Normalizer
from longmem_etl.dumps.read import (
    DEFAULT_BATCH,
    DumpSource,
    Misplaced,
    check_header,
    guess_json_spans,
    list_chunk,
    open_dump,
    reads_whole,
)
from longmem_etl.errors import BadInput
from longmem_etl.progress import progress as progress_bar
from longmem_etl.schema import MEMORIES_SCHEMA
from longmem_etl.snapshots.layout import (
    check_tenant,
    list_snapshots,
    parse_instant,
    snapshot_tenant,
    tenant_from_header,
)
from longmem_etl.snapshots.manifest import read_manifest
from longmem_etl.snapshots.parallel import (
    Worker,
    close_workers,
    decompressed_copy,
    normalized,
    start_workers,
)
from longmem_etl.snapshots.writer import SnapshotWriter, same_source_snapshot


@dataclass
class ConvertResult:
    """What a conversion produced (``path`` is the committed snapshot dir)."""

    path: Path
    tenant: str
    memories: int
    rejected: int
    collections: int
    source: str | None = None
    streamed: bool = False
    workers: int = 0  # worker processes that shared the decoding (0: this process alone)
    seconds: float = 0.0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    already_present: bool = False  # the same dump content was already a snapshot: nothing written

    @property
    def total(self) -> int:
        return self.memories + self.rejected

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    def render(self) -> str:
        """What ``longmem-etl convert`` prints on a terminal."""
        if self.already_present:
            return (
                f"already present: {self.path} holds this dump's content (same sha256) for tenant "
                f"{self.tenant}; nothing written"
            )
        human = (
            f"snapshot {self.path}\n"
            f"  tenant {self.tenant}: {self.memories} memories, {self.collections} collections, "
            f"{self.rejected} rejected ({self.seconds:.1f}s"
            f"{', streamed' if self.streamed else ''}"
            f"{f', {self.workers} worker processes' if self.workers else ''})"
        )
        if self.rejected_reasons:
            human += "\n  rejected: " + ", ".join(
                f"{k} x{v}" for k, v in sorted(self.rejected_reasons.items())
            )
        return human


# Rows per Parquet row group: normalisation works in smaller batches (DEFAULT_BATCH, for cache
# locality), which are gathered into row groups of this size before writing.
ROW_GROUP_ROWS = 50_000
# Bytes of dump per span when worker processes take a big .json without a full scan first (about
# DEFAULT_BATCH memories of a typical dump)
SPAN_BYTES = 8 << 20


def _dump_stem(path: str | os.PathLike) -> str:
    return dump_stem(path) or "default"


def _strict_error(where: str, rejected: pa.Table) -> BadInput:
    row = rejected.slice(0, 1).to_pylist()[0]
    loc = f"row {row['row_index']}"
    if row.get("field"):
        loc += f" field {row['field']}"
    more = f" (and {rejected.num_rows - 1} more)" if rejected.num_rows > 1 else ""
    return BadInput(f"{where}: {loc}: {row['reason']}{more} [--strict]")


class _RowGroups:
    """Gathers batches into row groups of exactly ``ROW_GROUP_ROWS`` rows (the last one shorter),
    so the row groups are the same however the rows were batched (serially or by worker spans;
    the data pages inside may still split differently)."""

    def __init__(self, writer: SnapshotWriter) -> None:
        self.writer = writer
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)
        self.rows += batch.num_rows
        while self.rows >= ROW_GROUP_ROWS:
            table = pa.Table.from_batches(self.batches, schema=MEMORIES_SCHEMA)
            self.writer.write_memories(table.slice(0, ROW_GROUP_ROWS))
            rest = table.slice(ROW_GROUP_ROWS)
            self.batches, self.rows = rest.to_batches(), rest.num_rows

    def flush(self) -> None:
        if self.batches:
            self.writer.write_memories(pa.Table.from_batches(self.batches, schema=MEMORIES_SCHEMA))
            self.batches, self.rows = [], 0


def _run(
    src: DumpSource,
    root: str | os.PathLike,
    tenant: str,
    *,
    source: dict[str, Any],
    strict: bool,
    show_progress: bool,
    parent: str | None = None,
    extra_manifest: dict[str, Any] | None = None,
    recipients: list[Any] | None = None,
    incremental: Any = None,
    workers: list[Worker] | None = None,
    named_at: datetime | None = None,
    in_order: bool | None = None,
    desc: str = "convert",
    on_rows: Callable[[pa.RecordBatch], None] | None = None,
    source_digest: Callable[[], dict[str, Any]] | None = None,
) -> ConvertResult:
    t0 = time.perf_counter()
    norm = Normalizer()
    reasons: dict[str, int] = {}
    chunks = normalized(src, norm, workers or [])
    try:
        by_bytes = not src.exact  # guessed spans: rows unknown until read, so bytes (with an ETA)
        bar = progress_bar(
            src.size_hint if by_bytes else src.total,
            desc=f"{desc} {tenant}",
            unit="B" if by_bytes else "mem",
            show=show_progress,
        )
        with (
            bar,
            SnapshotWriter(
                root,
                tenant,
                source=source,
                parent=parent,
                extra_manifest=extra_manifest,
                named_at=named_at,
                in_order=named_at is None if in_order is None else in_order,
                recipients=recipients,
                incremental=incremental,
                source_digest=source_digest,
            ) as writer,
        ):
            writer.set_header(src.header)
            writer.set_collections(src.collections)
            pending = _RowGroups(writer)
            for rows, nbytes, good, rejected in chunks:
                if rejected.num_rows:
                    if strict:
                        if not src.exact:  # a later span may yet prove the file broken: redo
                            raise Misplaced("a rejected row in --strict mode")
                        raise _strict_error(src.path, rejected)
                    for r in rejected.column("reason").to_pylist():
                        key = r.split(" ", 1)[0] if r.startswith("duplicate") else r.split(":")[0]
                        reasons[key] = reasons.get(key, 0) + 1
                    writer.write_rejected(rejected)
                pending.add(good)
                if on_rows is not None:
                    on_rows(good)
                bar.update(nbytes if by_bytes else rows)
            pending.flush()
    finally:
        chunks.close()
    assert writer.path is not None
    if writer.already_present:
        return _present(writer.path, src.path, t0)
    return ConvertResult(
        path=writer.path,
        tenant=writer.tenant,
        memories=writer.counts["memories"],
        rejected=writer.counts["rejected"],
        collections=writer.counts["collections"],
        source=src.path,
        streamed=src.streamed,
        workers=sum(not w.broken for w in workers or []) if src.spans is not None else 0,
        seconds=round(time.perf_counter() - t0, 3),
        rejected_reasons=reasons,
    )


def convert_dump(
    path: str | os.PathLike,
    root: str | os.PathLike,
    *,
    tenant: str | None = None,
    strict: bool = False,
    progress: bool = True,
    stream: bool | None = None,
    batch_size: int = DEFAULT_BATCH,
    parent: str | None = None,
    extra_manifest: dict[str, Any] | None = None,
    recipients: list[Any] | None = None,
    incremental: Any = None,
    on_rows: Callable[[pa.RecordBatch], None] | None = None,
    parallel: bool = True,
    first_batch: int | None = None,
    opened: DumpSource | None = None,
    digest: Callable[[], dict[str, Any]] | None = None,
) -> ConvertResult:
    """Convert a dump file into a new snapshot under ``root``.

    Whole-file problems raise BadInput before anything is visible; with ``strict`` so does the first
    rejected row. ``stream`` forces (True) or forbids (False) the bounded-memory reader for .json
    (JSONL always streams); None decides by size (see ``dumps.read``).

    A big .json is decoded by worker processes (see ``snapshots.parallel``; a compressed one is
    first decompressed to a temp file under ``root``; ``LONGMEM_ETL_CONVERT_WORKERS=0`` turns them
    off); the snapshot's content is the same either way. ``recipients``: age-encrypt the snapshot.

    ``on_rows(batch)``: each batch of accepted rows, in the snapshot's row order, as it is
    written (before the commit: `migrate` plans and uploads them while the rest converts). Each
    row is given once, even when a guessed split is abandoned and the file read again (the rows
    come out the same, in the same order). An exception it raises aborts the conversion.
    ``parallel=False``: this process alone (no worker processes, no decompressed copy), e.g.
    when the rows are wanted soon rather than all of them fast; then ``first_batch`` makes the
    first batches smaller (`dumps.read.open_dump`), and ``opened`` is ``path`` already opened
    by the caller (read with the same batch sizes; it is not scanned again).

    The file's sha256 (``digest``: the caller's ``{"sha256", "bytes"}`` of it when it hashes
    the file anyway, else hashed here in a thread) is waited for before the first row only when
    a snapshot of the tenant exists under ``root`` (it may already hold this content); otherwise
    the writer merges it into the manifest's ``source`` at commit.
    """
    source = {"kind": "dump_file", "path": str(Path(path).resolve()), "name": Path(path).name}
    if tenant is not None:
        check_tenant(tenant)
    workers: list[Worker] = []
    hashed = digest or _FileDigest(path).result
    tap = None if on_rows is None else _OnceTap(on_rows)

    def run(src: DumpSource) -> ConvertResult:
        t0 = time.perf_counter()
        name = check_tenant(tenant or tenant_from_header(src.header) or _dump_stem(path))
        pending = None
        if list_snapshots(root, name):  # one may hold this content already: find out first
            source.update(hashed())
            existing = same_source_snapshot(root, name, source)
            if existing is not None:
                return _present(existing, src.path, t0)
        else:  # nothing to compare with: the hash is only for the manifest
            pending = hashed
        return _run(
            src,
            root,
            name,
            named_at=export_instant(src.header),
            source=source,
            strict=strict,
            show_progress=progress,
            parent=parent,
            extra_manifest=extra_manifest,
            recipients=recipients,
            incremental=incremental,
            workers=workers,
            on_rows=None if tap is None else tap.attempt(),
            source_digest=pending,
        )

    maybe_copy = decompressed_copy(path, root, stream) if parallel else nullcontext(None)
    with maybe_copy as copy:
        plain = copy or path  # what the workers map
        workers = start_workers(plain, stream) if parallel else []
        try:
            guessed = guess_json_spans(str(plain), SPAN_BYTES) if workers else None
        except BadInput:  # (an empty copy, say) the usual path below reports it properly
            guessed = None
        if guessed is None and plain != path:  # these workers map the copy: not for path's spans
            close_workers(workers)
            workers = start_workers(path, stream) if parallel else []
        try:
            if guessed is not None:
                guessed.path = str(path)  # messages and the result name the user's file
                try:
                    return run(guessed)
                except Misplaced:  # nothing was committed; the workers may hold stale answers
                    close_workers(workers)
                    workers = start_workers(path, stream) if reads_whole(path, stream) else []
            if opened is not None and not workers:
                src, opened = opened, None
                return run(src)
            return run(
                open_dump(path, batch_size=batch_size, stream=stream, first_batch=first_batch)
            )
        finally:
            close_workers(workers)


def snapshot_from_dump(
    dump: dict[str, Any],
    root: str | os.PathLike,
    *,
    tenant: str | None = None,
    source: dict[str, Any],
    strict: bool = False,
    parent: str | None = None,
    extra_manifest: dict[str, Any] | None = None,
    recipients: list[Any] | None = None,
    incremental: Any = None,
    progress: bool = False,
    batch_size: int = DEFAULT_BATCH,
    named_at: datetime | None = None,
    in_order: bool | None = None,
    desc: str = "convert",
) -> ConvertResult:
    """Snapshot an in-memory dump (what ``export_account()`` returns; ``backup`` calls this).

    ``named_at``: the instant the snapshot is named after (a backup's export call; default as for a
    dump file). ``in_order`` (default: when ``named_at`` is None) names it after the tenant's newest
    snapshot if that one took the same second (a snapshot of the present). ``desc`` labels the bar."""
    where = str(source.get("uri") or source.get("name") or source.get("kind") or "dump")
    if not isinstance(dump, dict):
        raise BadInput(f"{where}: dump is not an object")
    memories = dump.get("memories")
    if not isinstance(memories, list):
        raise BadInput(f"{where}: no 'memories' list at the top level")
    header = {k: v for k, v in dump.items() if k not in ("memories", "collections")}
    collections = dump.get("collections") if "collections" in dump else None
    check_header(where, header, collections)
    # exact copies: the caller's objects are re-read through jsonio so numbers stay exact
    header = jsonio.loads(jsonio.dumps(header))
    if collections is not None:
        collections = jsonio.loads(jsonio.dumps(collections))

    def chunks():
        for i in range(0, len(memories), batch_size):
            yield list_chunk(i, [jsonio.dumps(m) for m in memories[i : i + batch_size]])

    src = DumpSource(
        path=where,
        header=header,
        collections=collections,
        total=len(memories),
        streamed=False,
        _chunks=chunks(),
    )
    name = check_tenant(tenant or tenant_from_header(header) or "default")
    return _run(
        src,
        root,
        name,
        source=source,
        strict=strict,
        show_progress=progress,
        parent=parent,
        extra_manifest=extra_manifest,
        recipients=recipients,
        incremental=incremental,
        named_at=named_at,
        in_order=in_order,
        desc=desc,
    )


def export_instant(header: dict[str, Any]) -> datetime | None:
    """The instant a dump describes (its ``exported_at``), for naming its snapshot; None when it
    has none that parses, or one in the future (which would pose as the newest state forever)."""
    when = parse_instant(header.get("exported_at"))
    if when is None or when > datetime.now(timezone.utc) + timedelta(minutes=5):
        return None
    return when


def _present(snap: Path, where: str | None, t0: float) -> ConvertResult:
    """The result for a dump whose content ``snap`` already holds."""
    manifest = read_manifest(snap)
    counts = manifest.get("counts") or {}
    return ConvertResult(
        path=snap,
        tenant=snapshot_tenant(snap, manifest),
        memories=int(counts.get("memories", 0)),
        rejected=int(counts.get("rejected", 0)),
        collections=int(counts.get("collections", 0)),
        source=where,
        seconds=round(time.perf_counter() - t0, 3),
        already_present=True,
    )


class _OnceTap:
    """Hands each accepted row to ``on_rows`` once across attempts: an attempt abandoned midway
    (`read.Misplaced`) is redone from the first row, and the redo's rows are the same rows in the
    same order, so the ones already handed over are skipped by position."""

    def __init__(self, on_rows: Callable[[pa.RecordBatch], None]) -> None:
        self.on_rows = on_rows
        self.given = 0

    def attempt(self) -> Callable[[pa.RecordBatch], None]:
        seen = 0

        def tap(batch: pa.RecordBatch) -> None:
            nonlocal seen
            start, seen = seen, seen + batch.num_rows
            if seen <= self.given:
                return
            if start < self.given:
                batch = batch.slice(self.given - start)
            self.given = seen
            self.on_rows(batch)

        return tap


class _FileDigest:
    """sha256 and size of a file, computed in a background thread (hashlib releases the GIL), so
    naming a dump by its content costs no wall time next to converting it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._out: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._hash, name="dump-sha256", daemon=True)
        self._thread.start()

    def _hash(self) -> None:
        try:
            h = hashlib.sha256()
            size = 0
            with open(self.path, "rb") as f:
                while block := f.read(8 << 20):
                    h.update(block)
                    size += len(block)
            self._out = {"sha256": h.hexdigest(), "bytes": size}
        except BaseException as exc:  # noqa: BLE001 - reported by result()
            self._error = exc

    def result(self) -> dict[str, Any]:
        """``{"sha256", "bytes"}`` of the file ({} if it could not be read: the reader says why)."""
        self._thread.join()
        return dict(self._out)

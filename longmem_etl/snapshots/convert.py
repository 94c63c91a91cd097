"""Dump (file or in-memory dict) -> snapshot: read, normalise in batches, write atomically.

One pipeline for both entry points: ``convert_dump`` (a file, possibly streamed) and
``snapshot_from_dump`` (the dict ``export_account`` returns, used by backup). Tenant: the explicit
argument, else the dump's ``tenant`` (a string, or an object's id/slug/name), else the file stem.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from longmem_etl import jsonio
from longmem_etl.dumps.normalize import Normalizer
from longmem_etl.dumps.read import (
    DEFAULT_BATCH,
    DumpSource,
    Misplaced,
    _list_chunk,
    check_header,
    guess_json_spans,
    open_dump,
    reads_whole,
)
from longmem_etl.errors import BadInput
from longmem_etl.progress import progress as progress_bar
from longmem_etl.schema import MEMORIES_SCHEMA
from longmem_etl.snapshots.layout import sanitize_tenant, tenant_from_header
from longmem_etl.snapshots.parallel import (
    Worker,
    close_workers,
    decompressed_copy,
    normalized,
    start_workers,
)
from longmem_etl.snapshots.writer import SnapshotWriter


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

    @property
    def total(self) -> int:
        return self.memories + self.rejected

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


# Rows per Parquet row group: normalisation works in smaller batches (DEFAULT_BATCH, for cache
# locality), which are gathered into row groups of this size before writing.
ROW_GROUP_ROWS = 50_000
# Bytes of dump per span when worker processes take a big .json without a full scan first (about
# DEFAULT_BATCH memories of a typical dump)
SPAN_BYTES = 8 << 20


def _dump_stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in (".gz", ".zst", ".jsonl", ".ndjson", ".json"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "default"


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
) -> ConvertResult:
    t0 = time.perf_counter()
    norm = Normalizer()
    reasons: dict[str, int] = {}
    chunks = normalized(src, norm, workers or [])
    try:
        by_bytes = not src.exact  # guessed spans: rows unknown until read, so bytes (with an ETA)
        if by_bytes:
            bar = progress_bar(src.size_hint, desc=f"convert {tenant}", unit="B")
        else:
            bar = progress_bar(src.total, desc=f"convert {tenant}", unit="mem")
        if not show_progress:
            bar.disable = True
        with (
            bar,
            SnapshotWriter(
                root,
                tenant,
                source=source,
                parent=parent,
                extra_manifest=extra_manifest,
                recipients=recipients,
                incremental=incremental,
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
                bar.update(nbytes if by_bytes else rows)
            pending.flush()
    finally:
        chunks.close()
    assert writer.path is not None
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
) -> ConvertResult:
    """Convert a dump file into a new snapshot under ``root``.

    Whole-file problems raise BadInput before anything is visible; with ``strict`` so does the first
    rejected row. ``stream`` forces (True) or forbids (False) the bounded-memory reader for .json
    (JSONL always streams); None decides by size (see ``dumps.read``).

    A big .json is decoded by worker processes (see ``snapshots.parallel``; a compressed one is
    first decompressed to a temp file under ``root``; ``LONGMEM_ETL_CONVERT_WORKERS=0`` turns them
    off); the snapshot's content is the same either way. ``recipients``: age-encrypt the snapshot.
    """
    source = {"kind": "dump_file", "path": str(Path(path).resolve()), "name": Path(path).name}
    workers: list[Worker] = []

    def run(src: DumpSource) -> ConvertResult:
        name = tenant or tenant_from_header(src.header) or _dump_stem(path)
        return _run(
            src,
            root,
            sanitize_tenant(name),
            source=source,
            strict=strict,
            show_progress=progress,
            parent=parent,
            extra_manifest=extra_manifest,
            recipients=recipients,
            incremental=incremental,
            workers=workers,
        )

    with decompressed_copy(path, root, stream) as copy:
        plain = copy or path  # what the workers map
        workers = start_workers(plain, stream)
        try:
            guessed = guess_json_spans(str(plain), SPAN_BYTES) if workers else None
        except BadInput:  # (an empty copy, say) the usual path below reports it properly
            guessed = None
        if guessed is None and plain != path:  # these workers map the copy: not for path's spans
            close_workers(workers)
            workers = start_workers(path, stream)
        try:
            if guessed is not None:
                guessed.path = str(path)  # messages and the result name the user's file
                try:
                    return run(guessed)
                except Misplaced:  # nothing was committed; the workers may hold stale answers
                    close_workers(workers)
                    workers = start_workers(path, stream) if reads_whole(path, stream) else []
            return run(open_dump(path, batch_size=batch_size, stream=stream))
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
) -> ConvertResult:
    """Snapshot an in-memory dump (what ``export_account()`` returns)."""
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
            yield _list_chunk(i, [jsonio.dumps(m) for m in memories[i : i + batch_size]])

    src = DumpSource(
        path=where,
        header=header,
        collections=collections,
        total=len(memories),
        streamed=False,
        _chunks=chunks(),
    )
    name = tenant or tenant_from_header(header) or "default"
    return _run(
        src,
        root,
        sanitize_tenant(name),
        source=source,
        strict=strict,
        show_progress=progress,
        parent=parent,
        extra_manifest=extra_manifest,
        recipients=recipients,
        incremental=incremental,
    )

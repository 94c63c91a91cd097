"""Reading dump files: formats, compression, BOM, whole-file validation, batches of raw memories.

A reader yields each memory as the raw JSON bytes of that memory (a zero-copy ``msgspec.Raw`` slice
where possible), in batches; ``dumps.normalize`` turns batches into Arrow. Keeping memories as raw
bytes is what makes the conversion both fast and exact: nothing is decoded to Python objects that
is not needed, and unknown values are copied verbatim.

Formats (by file name): ``.json``, ``.json.gz``, ``.json.zst``, ``.jsonl``, ``.jsonl.gz``,
``.jsonl.zst``.

Which inputs stream (bounded memory, whatever the size):
- JSONL (plain or compressed) always streams, a batch of lines at a time.
- ``.json`` streams with ijson (C backend, exact numbers) when ``stream=True`` or, with
  ``stream=None``, when the file is bigger than ``STREAM_THRESHOLD_BYTES`` on disk (compressed
  files: an eighth of it). Otherwise the whole file is mapped (or decompressed) into memory and cut
  into chunks of raw memories: after one msgspec scan of the whole file (``open_dump``), or, for
  ``convert``'s worker processes, at guessed boundaries proved by parsing each span
  (``guess_json_spans``). Several times faster than streaming; the workers also drop each span's
  pages once done (``release``), which bounds their memory, so ``convert`` uses them above the
  threshold too (falling back to ijson when the guess fails).

The readers live one per module in ``dumps/readers/`` (``whole``, ``guessed``, ``jsonl``,
``streaming``; ``base`` and ``compressed`` are shared); this module picks one and re-exports what
the rest of the toolkit uses.

JSONL header rule: the first non-blank line is the dump header (every top-level key except
``memories``: format_version, tenant, collections, ...) when it is an object with no ``id`` key and
with at least one of ``format_version``, ``tenant``, ``collections`` (also accepted: a line
``{"__header__": {...}}``). Every other line is one memory. ``write_dump`` writes the header line
with ``format_version`` first, so it is always recognised; ``sample_data/generate.py`` does the same.

Whole-file problems raise ``BadInput("<file>: <problem>")``: unreadable compression, empty file, not
JSON / truncated / trailing garbage (with the byte offset or line number), wrong top-level shape, no
``memories`` list, ``collections`` not a list, unknown ``format_version``.
"""

from __future__ import annotations

import os
from pathlib import Path

from longmem_etl.dumps.readers.base import (
    BOM,
    DEFAULT_BATCH,
    JSONL_BLOCK,
    STREAM_BATCH,
    Chunk,
    DumpSource,
    Misplaced,
    Span,
    check_header,
    dump_format,
    is_dump_path,
    list_chunk,
)
from longmem_etl.dumps.readers.compressed import open_binary, read_all_bytes
from longmem_etl.dumps.readers.guessed import guess_json_spans
from longmem_etl.dumps.readers.jsonl import read_jsonl
from longmem_etl.dumps.readers.streaming import read_json_streaming
from longmem_etl.dumps.readers.whole import bracketed, read_json_whole, release, span_raws
from longmem_etl.errors import BadInput

__all__ = [
    "BOM",
    "DEFAULT_BATCH",
    "JSONL_BLOCK",
    "STREAM_BATCH",
    "STREAM_THRESHOLD_BYTES",
    "Chunk",
    "DumpSource",
    "Misplaced",
    "Span",
    "bracketed",
    "check_header",
    "dump_format",
    "guess_json_spans",
    "is_dump_path",
    "list_chunk",
    "open_binary",
    "open_dump",
    "read_all_bytes",
    "reads_whole",
    "release",
    "span_raws",
]

STREAM_THRESHOLD_BYTES = 900 << 20  # on disk; compressed files count 8x (JSON compresses ~4-8x)
# (the whole-file path peaks at about the decompressed size + 0.5 GB: 800 MB -> 1.3 GB)


def reads_whole(path: str | os.PathLike, stream: bool | None) -> bool:
    """Whether ``open_dump(path, stream=stream)`` reads a .json whole (not streamed)."""
    kind, compression = dump_format(path)
    if kind != "json" or stream:
        return False
    if stream is None:
        return os.path.getsize(path) * (8 if compression else 1) <= STREAM_THRESHOLD_BYTES
    return True


def open_dump(
    path: str | os.PathLike,
    *,
    batch_size: int = DEFAULT_BATCH,
    stream: bool | None = None,
    first_batch: int | None = None,
) -> DumpSource:
    """Open a dump file for conversion; whole-file problems raise BadInput before any row is read.

    ``first_batch``: a whole-file ``.json``'s first chunks are this many memories, doubling up
    to ``batch_size`` (`whole.span_sizes`), so the first rows are ready sooner; the streaming
    readers (JSONL, ijson) read blocks and ignore it.

    An age-encrypted dump (``NAME.age``, e.g. an encrypted backup's Dagster dump) is read from a
    private decrypted copy (``snapshots.crypto.plain_file``; the identity is needed).
    """
    spath = str(path)
    if spath.endswith(".age") and Path(spath).is_file():
        from longmem_etl.snapshots.crypto import plain_file

        spath = str(plain_file(spath))
    kind, compression = dump_format(spath)
    if not Path(spath).exists():
        raise BadInput(f"{spath}: no such file")
    if kind == "jsonl":
        return read_jsonl(spath, min(batch_size, STREAM_BATCH))
    if not reads_whole(spath, stream):
        return read_json_streaming(spath, min(batch_size, STREAM_BATCH))
    return read_json_whole(spath, batch_size, first_batch)

"""What every dump reader yields: a ``DumpSource`` (header, collections, memories in ``Chunk``s),
byte ``Span``s of a whole-file .json, the header checks, the message for a msgspec error, and the
batch sizes. The readers (``whole``, ``guessed``, ``jsonl``, ``streaming``) build these; nothing
here reads a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import numpy as np

from longmem_etl import jsonio
from longmem_etl.dumps.formats import DUMP_FORMATS, DUMP_SUFFIXES_TEXT, dump_suffix
from longmem_etl.errors import BadInput
from longmem_etl.jsonio import kind_of
from longmem_etl.schema import FORMAT_VERSION

BOM = b"\xef\xbb\xbf"
# rows decoded at once: small enough that the work stays in cache (~15% faster than 50k);
# convert writes them out in row groups of ROW_GROUP_ROWS
DEFAULT_BATCH = 10_000
STREAM_BATCH = 20_000  # rows per batch when streaming: keeps peak RSS well under 600 MB
JSONL_BLOCK = 1 << 23  # 8 MiB of (decompressed) text per read

WS = re.compile(rb"[ \t\r\n]*")
WS_BYTES = frozenset(b" \t\r\n")
TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
LIST_RAW = msgspec.json.Decoder(list[msgspec.Raw])


def dump_format(path: str | os.PathLike) -> tuple[str, str | None]:
    """``(kind, compression)`` from the file name: kind is ``json`` or ``jsonl``."""
    suffix = dump_suffix(path)
    if suffix is None:
        raise BadInput(f"{path}: unknown dump format (expected {DUMP_SUFFIXES_TEXT})")
    return DUMP_FORMATS[suffix]


def is_dump_path(path: str | os.PathLike) -> bool:
    """True when the name has a dump extension (used by endpoint/URI dispatch)."""
    try:
        dump_format(path)
    except BadInput:
        return False
    return True


@dataclass
class Chunk:
    """A run of consecutive memories: ``count`` rows from row index ``start`` (``count`` is None
    for a guessed span not parsed yet: whatever ``body`` holds).

    ``body`` is, when the reader has it cheaply, the JSON array text of exactly these rows (valid only
    until the next chunk is read); ``raws()`` gives each row's raw JSON (computed on demand);
    ``check()`` raises BadInput for whole-file problems inside the chunk (a broken JSONL line) and is
    called before rows are looked at one by one.
    """

    start: int
    count: int | None
    body: Any
    raws: Callable[[], Sequence[Any]]
    check: Callable[[], None] = lambda: None


class Span(NamedTuple):
    """Memories at bytes ``data[first:end]`` of a whole-file .json: ``data[first - 1]`` and
    ``data[end]`` are the bytes just outside them (``bracketed`` turns those into ``[`` ``]``).
    ``count`` is the number of memories, or None when the span was guessed and not yet parsed."""

    first: int
    end: int
    count: int | None


class Misplaced(Exception):
    """A guessed span boundary was not a boundary between two memories, or the JSON around it is
    broken: the dump has to be read again with exact boundaries (a full scan)."""


@dataclass
class DumpSource:
    """A readable dump: its header, collections and its memories in chunks.

    ``header`` holds every top-level key except ``memories`` and ``collections`` (values exact).
    ``collections`` is None when the dump has no ``collections`` key. ``chunks()`` (fast) or
    ``batches()`` (``(start_row_index, [raw memory JSON, ...])``) may be iterated once.
    """

    path: str
    header: dict[str, Any]
    collections: list[Any] | None
    total: int | None  # memories, when known before reading them
    streamed: bool
    _chunks: Iterator[Chunk] = field(repr=False)
    size_hint: int | None = None  # bytes, for progress when total is unknown
    # whole-file .json: the mapped file and its memories as byte spans ``(first, end, count)``
    # (see ``Span``), so that chunks can also be normalised elsewhere (convert's worker processes)
    spans: list[Span] | None = field(default=None, repr=False)
    data: Any = field(default=None, repr=False)
    exact: bool = True  # False: the spans' boundaries are guesses (``guess_json_spans``)

    @classmethod
    def streaming(
        cls,
        path: str,
        header: dict[str, Any],
        collections: list[Any] | None,
        chunks: Iterator[Chunk],
        size_hint: int,
    ) -> DumpSource:
        """A dump read as it streams: rows unknown until read, progress by ``size_hint`` bytes."""
        return cls(path, header, collections, None, True, chunks, size_hint=size_hint)

    def chunks(self) -> Iterator[Chunk]:
        if not self.exact:  # guessed spans must be parsed one by one (snapshots.parallel)
            raise RuntimeError("a dump with guessed spans is read through its spans")
        return self._chunks

    def batches(self) -> Iterator[tuple[int, list[Any]]]:
        for chunk in self._chunks:
            chunk.check()  # whole-file problems (a broken JSONL line) stay whole-file problems
            yield chunk.start, list(chunk.raws())


def msgspec_problem(exc: Exception) -> str:
    msg = str(exc)
    if "truncated" in msg.lower():
        return "not valid JSON: input is truncated (or holds an invalid \\u escape)"
    if "trailing characters" in msg:
        return f"not valid JSON: trailing garbage after the top-level value ({msg})"
    return f"not valid JSON: {msg}"


def check_header(path: Any, header: dict[str, Any], collections: Any) -> None:
    """Refuse a dump whose format_version is unknown or whose collections is not a list."""
    if "format_version" in header:
        fv = header["format_version"]
        if isinstance(fv, bool) or fv != FORMAT_VERSION:
            raise BadInput(
                f"{path}: unknown format_version {jsonio.dumps_str(fv)} (this tool reads {FORMAT_VERSION})"
            )
    if collections is not None and not isinstance(collections, list):
        raise BadInput(f"{path}: 'collections' is {kind_of(collections)}, expected a list")


def address(buf: Any) -> int:
    return np.frombuffer(buf, np.uint8).__array_interface__["data"][0] if len(buf) else 0


def list_chunk(start: int, rows: list[bytes]) -> Chunk:
    return Chunk(start, len(rows), b"[" + b",".join(rows) + b"]", lambda: rows)

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

import gzip
import itertools
import mmap
import os
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import msgspec
import numpy as np

from longmem_etl import jsonio
from longmem_etl.dumps.formats import DUMP_FORMATS, DUMP_SUFFIXES_TEXT, dump_suffix
from longmem_etl.errors import BadInput
from longmem_etl.jsonio import kind_of, raw_kind
from longmem_etl.schema import FORMAT_VERSION

BOM = b"\xef\xbb\xbf"
STREAM_THRESHOLD_BYTES = 900 << 20  # on disk; compressed files count 8x (JSON compresses ~4-8x)
# (the whole-file path peaks at about the decompressed size + 0.5 GB: 800 MB -> 1.3 GB)
DEFAULT_BATCH = (
    10_000  # rows decoded at once: small enough that the work stays in cache (~15% faster
)
# than 50k); convert writes them out in row groups of ROW_GROUP_ROWS
STREAM_BATCH = 20_000  # rows per batch when streaming: keeps peak RSS well under 600 MB


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


# --------------------------------------------------------------------------------------------------
# Opening and decompression


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """The decompressed byte stream of a dump file."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{path}: no such file")
    if p.is_dir():
        raise BadInput(f"{path}: is a directory, expected a dump file")
    _kind, compression = dump_format(p)
    raw = open(p, "rb")  # noqa: SIM115 - returned to the caller
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return _ZstdReader(raw, zstandard.ZstdDecompressor())  # type: ignore[return-value]
    return raw


class _ZstdReader:
    """A zstd stream (one or more frames) as a ``read``/``readline`` file; EOFError when the data
    ends inside a frame (zstandard's own ``stream_reader`` just stops, so a truncated file looked
    empty or short)."""

    def __init__(self, raw: BinaryIO, dctx: Any) -> None:
        self._raw, self._dctx = raw, dctx
        self._obj = dctx.decompressobj()
        self._buf = bytearray()
        self._eof = False
        self._started = False  # bytes of the current frame seen

    def _fill(self, want: int) -> None:
        while not self._eof and (want < 0 or len(self._buf) < want):
            block = self._raw.read(1 << 20)
            if not block:
                if self._started:
                    raise EOFError("zstd data ends inside a frame")
                self._eof = True
                break
            while block:
                self._started = True
                self._buf += self._obj.decompress(block)
                if not self._obj.eof:
                    break
                block = self._obj.unused_data
                self._obj = self._dctx.decompressobj()
                self._started = False

    def read(self, n: int = -1) -> bytes:
        self._fill(n if n is not None else -1)
        if n is None or n < 0:
            out, self._buf = bytes(self._buf), bytearray()
        else:
            out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return out

    def readline(self) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0 or self._eof:
                end = i + 1 if i >= 0 else len(self._buf)
                out, self._buf = bytes(self._buf[:end]), self._buf[end:]
                return out
            self._fill(len(self._buf) + (1 << 16))

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _ZstdReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _compression_error(path: Any, exc: BaseException) -> BadInput:
    kind = dump_format(path)[1] or "file"
    if isinstance(exc, EOFError):
        return BadInput(f"{path}: truncated {kind} stream (compressed data ends early)")
    return BadInput(f"{path}: corrupt {kind} data ({exc})")


_COMPRESSION_ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, zlib.error, EOFError)
try:  # zstandard is a dependency, but keep the reader importable without it
    import zstandard as _zstd

    _COMPRESSION_ERRORS += (_zstd.ZstdError,)
except ImportError:  # pragma: no cover
    pass


def read_all_bytes(path: str | os.PathLike) -> bytearray | memoryview:
    """The whole decompressed file as a *writable* buffer (see ``_inplace_chunks``), BOM removed;
    BadInput for corrupt compression or empty files.

    A plain file is mapped copy-on-write (``mmap.ACCESS_COPY``): no read copy, pages come from the
    page cache as the decoder scans them, and the few bytes ``_inplace_chunks`` changes stay
    private to this process. A compressed one is decompressed into a bytearray.
    """
    data: bytearray | memoryview
    try:
        if dump_format(path)[1] is None:
            size = os.path.getsize(path)
            if size == 0:
                raise BadInput(f"{path}: empty file")
            with open(path, "rb") as f:
                data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
        else:
            data = bytearray()
            with open_binary(path) as f:
                while block := f.read(1 << 24):
                    data += block
    except _COMPRESSION_ERRORS as exc:
        raise _compression_error(path, exc) from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror or exc})") from None
    if bytes(data[:3]) == BOM:
        data = memoryview(data)[len(BOM) :]
    if _WS.match(data).end() == len(data):  # type: ignore[union-attr]  # only whitespace
        raise BadInput(f"{path}: empty file")
    return data


# --------------------------------------------------------------------------------------------------
# The dump as the rest of the toolkit sees it


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

    def chunks(self) -> Iterator[Chunk]:
        if not self.exact:  # guessed spans must be parsed one by one (snapshots.parallel)
            raise RuntimeError("a dump with guessed spans is read through its spans")
        return self._chunks

    def batches(self) -> Iterator[tuple[int, list[Any]]]:
        for chunk in self._chunks:
            chunk.check()  # whole-file problems (a broken JSONL line) stay whole-file problems
            yield chunk.start, list(chunk.raws())


def _msgspec_problem(exc: Exception) -> str:
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


_WS = re.compile(rb"[ \t\r\n]*")
_TOP = msgspec.json.Decoder(dict[str, msgspec.Raw])
_LIST_RAW = msgspec.json.Decoder(list[msgspec.Raw])


def _address(buf: Any) -> int:
    return np.frombuffer(buf, np.uint8).__array_interface__["data"][0] if len(buf) else 0


@contextmanager
def bracketed(data: Any, first: int, end: int) -> Iterator[Any]:
    """(Context-manager body) the JSON array text of the rows at ``data[first:end]``, zero-copy: the
    separator bytes just outside are set to ``[`` / ``]`` meanwhile (``data`` must be writable)."""
    view = memoryview(data)
    before, after = data[first - 1], data[end]
    data[first - 1], data[end] = 0x5B, 0x5D  # [ ]
    try:
        yield view[first - 1 : end + 1]
    finally:
        data[first - 1], data[end] = before, after


def _exact_spans(data: Any, memories: list[Any], size: int) -> list[Span]:
    """Spans of ``size`` memories each, from the raw slices a full scan of ``data`` gave."""
    base = _address(data)
    spans = []
    for i in range(0, len(memories), size):
        part = memories[i : i + size]
        first = _address(part[0]) - base
        spans.append(Span(first, _address(part[-1]) - base + len(part[-1]), len(part)))
    return spans


def _inplace_chunks(data: Any, memories: list[Any], spans: list[Span]) -> Iterator[Chunk]:
    """Chunks whose ``body`` is a zero-copy view of ``data`` (see ``bracketed``)."""
    start = 0
    for span in spans:
        assert span.count is not None
        part = memories[start : start + span.count]
        with bracketed(data, span.first, span.end) as body:
            yield Chunk(start, span.count, body, lambda part=part: part)
        start += span.count


def release(data: Any, span: Span) -> None:
    """Drop the pages of ``span`` from this process's memory when ``data`` is a mapped file
    (``read_all_bytes``); touching them again reads them back from the file (the bytes
    ``bracketed`` changed are restored by then). A worker that releases each span once it is done
    keeps its resident memory to the spans in flight, whatever the size of the file."""
    mapped = getattr(data, "obj", None)
    advice = getattr(mmap, "MADV_DONTNEED", None)  # not on every platform
    if not isinstance(mapped, mmap.mmap) or advice is None or not hasattr(mapped, "madvise"):
        return
    offset = _address(data) - _address(mapped)  # the BOM, if any, was cut off the front
    lo = (offset + span.first) // mmap.PAGESIZE * mmap.PAGESIZE
    hi = min(len(mapped), -(-(offset + span.end + 1) // mmap.PAGESIZE) * mmap.PAGESIZE)
    if hi > lo:
        mapped.madvise(advice, lo, hi - lo)


def reads_whole(path: str | os.PathLike, stream: bool | None) -> bool:
    """Whether ``open_dump(path, stream=stream)`` reads a .json whole (not streamed)."""
    kind, compression = dump_format(path)
    if kind != "json" or stream:
        return False
    if stream is None:
        return os.path.getsize(path) * (8 if compression else 1) <= STREAM_THRESHOLD_BYTES
    return True


def span_raws(data: Any, span: Span) -> list[Any]:
    """Each memory's raw JSON in ``span`` (zero-copy slices of ``data``); Misplaced when the span
    does not parse as a run of JSON values (only possible for a guessed span)."""
    with bracketed(data, span.first, span.end) as body:
        try:
            return _LIST_RAW.decode(body)
        except msgspec.DecodeError:  # (ValidationError is a subclass)
            raise Misplaced(f"bytes {span.first}-{span.end} are not a run of memories") from None
        except RecursionError:  # a too-deep row
            if span.count is None:  # a guess is proven only by parsing: redo with exact spans
                raise Misplaced(f"bytes {span.first}-{span.end} hold a too-deep memory") from None
            items, _ = jsonio.container_items(body, 0)  # exact: split without recursion
            return [body[i:j] for i, j in items]


# --- Guessed spans: no full scan ----------------------------------------------------------------

_MEMORIES_KEY = re.compile(rb'"memories"[ \t\r\n]*:[ \t\r\n]*\[')
_ANY_SEPARATOR = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")
_FIRST_KEY = re.compile(rb'[ \t\r\n]*"[^"\\]*"')
_LEARN_TRIES = 16
_LEARN_BYTES = 1 << 20


def _closing_bracket(data: Any) -> int | None:
    """Index of the ``]`` just before the final ``}`` of the file, if the file ends that way."""
    j = len(data) - 1
    for want in (0x7D, 0x5D):  # } then ]
        while j >= 0 and data[j] in _WS_BYTES:
            j -= 1
        if j < 0 or data[j] != want:
            return None
        if want == 0x7D:
            j -= 1
    return j


def _learn_separator(data: Any, first: int, closing: int) -> re.Pattern[bytes] | None:
    """The bytes between two memories, learned from the first real boundary, plus the next
    memory's first key (e.g. ``}``, ``,``, a newline, ``{"id"``): a pattern nested objects rarely
    repeat, and that cannot occur inside a string (its ``"`` would end the string). A candidate
    is a real boundary when the memories before it parse as a complete list (see
    ``guess_json_spans``)."""
    for tries, m in enumerate(_ANY_SEPARATOR.finditer(data, first, closing)):
        if tries >= _LEARN_TRIES or m.start() - first > _LEARN_BYTES:
            return None
        comma = m.start() + m.group().index(b",")
        try:
            span_raws(data, Span(first, comma, None))
        except Misplaced:
            continue
        key = _FIRST_KEY.match(data, m.end(), closing)
        tail = bytes(data[m.end() : key.end()]) if key else b""
        return re.compile(re.escape(m.group() + tail))
    return None


def guess_json_spans(path: str, span_bytes: int) -> DumpSource | None:
    """A whole-file .json cut into spans of about ``span_bytes`` at *guessed* boundaries between
    memories, without parsing the memories (the full scan costs ~1 s per GB before any work could
    start). None when the file does not have the usual shape (``"memories": [...]`` last in the
    top-level object, memories separated the same way throughout): read it with ``open_dump``.

    Why a guess is safe: the header is parsed with the memories cut out, which proves where the
    array starts and ends. Every span is then parsed on its own as ``[ ... ]``; a span that parses
    completely, starting from a proven boundary, proves its own end is a boundary too (the parser
    is in the same state there as when reading the whole file). So when every span parses, the
    spans are exactly the memories; when one does not, ``span_raws`` raises Misplaced and the
    caller reads the file again with ``open_dump``. Whole-file problems are left to that path too,
    so the error a user sees is the same either way.
    """
    data = read_all_bytes(path)
    key = _MEMORIES_KEY.search(data)
    closing = _closing_bracket(data)
    if key is None or closing is None or closing < key.end() - 1:
        return None
    opening = key.end() - 1
    try:
        top = _TOP.decode(bytes(data[:opening]) + b"[]" + bytes(data[closing + 1 :]))
        if bytes(top.pop("memories", b"")) != b"[]":
            return None
        header, collections = _header_of(path, top)
    except (msgspec.DecodeError, BadInput, RecursionError):
        return None
    first = opening + 1
    spans: list[Span] = []
    if _WS.match(data, first).end() < closing:  # type: ignore[union-attr]
        pattern = _learn_separator(data, first, closing)
        if pattern is None:
            return None
        while (m := pattern.search(data, first + span_bytes, closing)) is not None:
            comma = m.start() + m.group().index(b",")
            spans.append(Span(first, comma, None))
            first = comma + 1
        spans.append(Span(first, closing, None))
    return DumpSource(
        path=path,
        header=header,
        collections=collections,
        total=None,
        streamed=False,
        _chunks=iter(()),
        size_hint=closing - opening,
        spans=spans,
        data=data,
        exact=False,
    )


def _header_of(path: str, top: dict[str, Any]) -> tuple[dict[str, Any], list[Any] | None]:
    """``(header, collections)`` from the raw top-level keys other than ``memories``."""
    for key, value in top.items():
        if jsonio.too_deep(value):
            raise BadInput(f"{path}: top-level key {key!r} is {jsonio.TOO_DEEP}")
    try:
        collections_raw = top.pop("collections", None)
        collections = jsonio.loads(collections_raw) if collections_raw is not None else None
        header = {k: jsonio.loads(v) for k, v in top.items()}
    except msgspec.DecodeError as exc:
        raise BadInput(f"{path}: {_msgspec_problem(exc)}") from None
    check_header(path, header, collections)
    return header, collections


class _TopMemories(msgspec.Struct):
    memories: list[msgspec.Raw]


_TOP_MEMORIES = msgspec.json.Decoder(_TopMemories)


def _top_and_memories(path: str, data: Any) -> tuple[list[Any], dict[str, Any]]:
    """``(memories as raw slices, other top-level keys as raw)`` in ONE scan of the big file.

    The scan validates the whole document and slices the memories; the other keys are then decoded
    from a small copy of the file with the memories array cut out (it lies between the byte before
    the first item and the byte after the last). Unusual shapes take the simple two-scan way, which
    also gives the precise error messages.
    """
    try:
        memories = _TOP_MEMORIES.decode(data).memories
    except msgspec.ValidationError:  # (a subclass of DecodeError) no / not-a-list memories
        memories = None
    except msgspec.DecodeError as exc:
        raise BadInput(f"{path}: {_msgspec_problem(exc)}") from None
    if memories:
        base = _address(data)
        i = _address(memories[0]) - base - 1
        j = _address(memories[-1]) - base + len(memories[-1])
        while i > 0 and data[i] in _WS_BYTES:
            i -= 1
        while j < len(data) - 1 and data[j] in _WS_BYTES:
            j += 1
        if data[i] == 0x5B and data[j] == 0x5D:  # [ ... ]
            try:
                top = _TOP.decode(bytes(data[:i]) + b"[]" + bytes(data[j + 1 :]))
            except msgspec.DecodeError as exc:  # e.g. a key that is not valid UTF-8
                raise BadInput(f"{path}: {_msgspec_problem(exc)}") from None
            top.pop("memories", None)
            return memories, top
    try:
        top = _TOP.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadInput(f"{path}: {_msgspec_problem(exc)}") from None
    if "memories" not in top:
        raise BadInput(f"{path}: no 'memories' list at the top level")
    try:
        memories = _LIST_RAW.decode(top.pop("memories"))
    except msgspec.ValidationError:
        raise BadInput(f"{path}: 'memories' is not a list") from None
    return memories, top


_WS_BYTES = frozenset(b" \t\r\n")
_KEY_COLON = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")[ \t\r\n]*:[ \t\r\n]*', re.S)


def _deep_top_and_memories(path: str, data: Any, first: int) -> tuple[list[Any], dict[str, Any]]:
    """``_top_and_memories`` for a file msgspec cannot take in one call because some value nests
    hundreds of levels deep: the top-level object and the memories array are split by an iterative
    scanner (``jsonio.container_items``), every memory that is not too deep is still validated
    (a broken one is a whole-file error, as on the fast path), and a too-deep memory stays a raw
    slice for ``normalize`` to reject with its reason. Slower, but only such files take it."""
    view = memoryview(data)
    try:
        members, close = jsonio.container_items(data, first)
    except ValueError as exc:
        raise BadInput(f"{path}: not valid JSON: {exc}") from None
    if bytes(data[close + 1 :]).strip(b" \t\r\n"):
        raise BadInput(f"{path}: not valid JSON: trailing garbage after the top-level value")
    top: dict[str, Any] = {}
    memories: list[Any] | None = None
    for a, b in members:
        m = _KEY_COLON.match(data, a, b)
        if m is None:
            raise BadInput(f"{path}: not valid JSON: expected a key at byte {a}")
        key = msgspec.json.decode(m.group(1))
        start = m.end()
        if key != "memories":
            top[key] = bytes(data[start:b])
            continue
        if data[start] != 0x5B:
            raise BadInput(f"{path}: 'memories' is not a list")
        try:
            items, _ = jsonio.container_items(data, start)
        except ValueError as exc:
            raise BadInput(f"{path}: not valid JSON: {exc}") from None
        memories = [view[i:j] for i, j in items]
        for n, item in enumerate(memories):
            try:
                msgspec.json.decode(item)
            except RecursionError:
                continue  # normalize rejects it as too deep
            except msgspec.DecodeError as exc:
                raise BadInput(f"{path}: memory {n}: {_msgspec_problem(exc)}") from None
    if memories is None:
        raise BadInput(f"{path}: no 'memories' list at the top level")
    return memories, top


def _read_json_whole(path: str, batch_size: int) -> DumpSource:
    data = read_all_bytes(path)
    first = _WS.match(data).end()  # type: ignore[union-attr]  # no copy, unlike lstrip()
    stripped = bytes(data[first : first + 64])
    if stripped[:1] != b"{":
        try:
            msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise BadInput(f"{path}: {_msgspec_problem(exc)}") from None
        except RecursionError:
            pass  # nested too deep to validate; its kind is the answer either way
        raise BadInput(
            f"{path}: top level is {raw_kind(stripped)}, expected an object with a 'memories' list"
        )
    try:
        memories, top = _top_and_memories(path, data)
    except RecursionError:  # a memory nested hundreds deep: split without recursion
        memories, top = _deep_top_and_memories(path, data, first)
    header, collections = _header_of(path, top)
    spans = _exact_spans(data, memories, batch_size)
    return DumpSource(
        path=path,
        header=header,
        collections=collections,
        total=len(memories),
        streamed=False,
        _chunks=_inplace_chunks(data, memories, spans),
        spans=spans,
        data=data,
    )


# --- JSONL -----------------------------------------------------------------------------------------

_HEADER_DEC = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _jsonl_header(line: bytes) -> dict[str, Any] | None:
    """The header dict when ``line`` is a header line (see module docstring), else None."""
    if line[:1] != b"{":
        return None
    try:
        obj = _HEADER_DEC.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if list(obj) == ["__header__"] and bytes(obj["__header__"]).lstrip()[:1] == b"{":
        return jsonio.loads(obj["__header__"])
    if "id" in obj or not (_HEADER_KEYS & obj.keys()):
        return None
    return {k: jsonio.loads(v) for k, v in obj.items()}


_HEADER_KEYS = frozenset({"format_version", "tenant", "collections"})


def _line_problem(path: Any, lineno: int, line: bytes) -> BadInput:
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return BadInput(f"{path}: line {lineno}: {_msgspec_problem(exc)}")
    return BadInput(f"{path}: line {lineno}: not valid JSON")  # pragma: no cover


def _read_jsonl(path: str, batch_size: int) -> DumpSource:
    try:
        f = open_binary(path)
        first = f.readline()
    except _COMPRESSION_ERRORS as exc:
        raise _compression_error(path, exc) from None
    if first.startswith(BOM):
        first = first[len(BOM) :]
    lineno = 1
    # skip leading blank lines
    while first and not first.strip():
        try:
            first = f.readline()
        except _COMPRESSION_ERRORS as exc:
            raise _compression_error(path, exc) from None
        lineno += 1
    if not first:
        f.close()
        raise BadInput(f"{path}: empty file")
    header = _jsonl_header(first.strip())
    collections = None
    if header is not None:
        collections = header.pop("collections", None)
        if "memories" in header:
            raise BadInput(f"{path}: line {lineno}: the __header__ line must not hold 'memories'")
        check_header(path, header, collections)
        pending: list[tuple[int, bytes]] = []
    else:
        pending = [(lineno, first.strip())]
        header = {}
    size = os.path.getsize(path)

    def blocks() -> Iterator[bytes]:
        with f:
            try:
                while block := f.read(JSONL_BLOCK):
                    yield block
            except _COMPRESSION_ERRORS as exc:
                raise _compression_error(path, exc) from None

    def gen() -> Iterator[Chunk]:
        row = 0
        next_line = lineno + 1
        rows: list[bytes] = [p[1] for p in pending]
        numbers: list[int] = [p[0] for p in pending]
        leftover = b""
        for block in itertools.chain(blocks(), [None]):
            if block is None:
                data, leftover = leftover, b""
            else:
                data = leftover + block
                cut = data.rfind(b"\n")
                if cut < 0:
                    leftover = data
                    continue
                data, leftover = data[:cut], data[cut + 1 :]
            lines = data.split(b"\n") if (data or block is not None) else []
            if b"" in lines:  # blank lines: skip them, keeping line numbers right
                for line in lines:
                    stripped = line.strip()
                    if stripped:
                        rows.append(stripped)
                        numbers.append(next_line)
                    next_line += 1
            else:  # the usual case: no per-line Python work
                rows.extend(lines)
                numbers.extend(range(next_line, next_line + len(lines)))
                next_line += len(lines)
            while len(rows) >= batch_size or (block is None and rows):
                part, rows = rows[:batch_size], rows[batch_size:]
                nums, numbers = numbers[:batch_size], numbers[batch_size:]
                yield Chunk(
                    row,
                    len(part),
                    b"[" + b",".join(part) + b"]",
                    lambda part=part: [r.strip() for r in part],
                    lambda part=part, nums=nums: _check_lines(path, part, nums),
                )
                row += len(part)

    return DumpSource(
        path=path,
        header=header,
        collections=collections,
        total=None,
        streamed=True,
        _chunks=gen(),
        size_hint=size,
    )


JSONL_BLOCK = 1 << 23  # 8 MiB of (decompressed) text per read


def _check_lines(path: Any, batch: list[bytes], lines: list[int]) -> None:
    """Every line must be exactly one JSON value (a broken line is a whole-file problem)."""
    try:
        decoded = _LIST_RAW.decode(b"[" + b",".join(batch) + b"]")
        if len(decoded) == len(batch):
            return
    except (msgspec.DecodeError, RecursionError):
        pass
    deep = False
    for line, lineno in zip(batch, lines, strict=False):
        try:
            msgspec.json.decode(line)
        except RecursionError:  # too deep to check here: normalize rejects the row as too deep
            _one_value(path, lineno, line)
            deep = True
        except msgspec.DecodeError:
            raise _line_problem(path, lineno, line) from None
    if deep:
        return
    raise BadInput(f"{path}: a line holds more than one JSON value")  # pragma: no cover


def _one_value(path: Any, lineno: int, line: bytes) -> None:
    """BadInput unless a too-deep line is one array/object with nothing after it."""
    try:
        if line[:1] in (b"[", b"{"):
            _, close = jsonio.container_items(line, 0)
            if not line[close + 1 :].strip():
                return
    except ValueError:
        pass
    raise BadInput(f"{path}: line {lineno}: not valid JSON")


# --- streaming .json with ijson --------------------------------------------------------------------


def _ijson_problem(path: Any, exc: Exception) -> BadInput:
    msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    if "premature" in msg.lower() or "incomplete" in msg.lower():
        return BadInput(f"{path}: not valid JSON: input is truncated ({msg})")
    if "trailing" in msg.lower() or "additional data" in msg.lower():
        return BadInput(f"{path}: not valid JSON: trailing garbage after the top-level value")
    return BadInput(f"{path}: not valid JSON: {msg}")


class _Prefixed:
    """A byte stream with a few already-read bytes put back in front (only ``read``, for ijson)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n is None or n < 0:
                out, self._head = self._head + self._rest.read(), b""
                return out
            out, self._head = self._head[:n], self._head[n:]
            if len(out) < n:
                out += self._rest.read(n - len(out))
            return out
        return self._rest.read(n)

    def close(self) -> None:
        self._rest.close()


def _event_kind(event: str) -> str:
    return {
        "start_array": "an array",
        "string": "a string",
        "number": "a number",
        "boolean": "a boolean",
        "null": "null",
    }.get(event, event)


def _ensure_not_empty(path: str) -> None:
    """BadInput("empty file") when the (decompressed) file holds only whitespace / a BOM."""
    try:
        with open_binary(path) as f:
            head = f.read(3)
            if head == BOM:
                head = b""
            while True:
                if head.strip():
                    return
                head = f.read(1 << 16)
                if not head:
                    raise BadInput(f"{path}: empty file")
    except _COMPRESSION_ERRORS as exc:
        raise _compression_error(path, exc) from None


def _read_json_streaming(path: str, batch_size: int) -> DumpSource:
    _ensure_not_empty(path)
    try:
        header, collections, has_memories, deep = _scan_top_level(path)
    except _PrefixClash:
        return _read_json_whole(path, batch_size)
    if not has_memories:
        raise BadInput(f"{path}: no 'memories' list at the top level")
    check_header(path, header, collections)

    def gen() -> Iterator[Chunk]:
        import ijson

        row = 0
        batch: list[bytes] = []
        try:
            with open_binary(path) as f:
                head = f.read(3)
                stream = f if head == BOM else _Prefixed(head, f)
                items = (
                    _serialized_items(stream)
                    if deep
                    else (
                        jsonio.dumps(item)
                        for item in ijson.items(stream, "memories.item", use_float=False)
                    )
                )
                for item in items:
                    batch.append(item)
                    if len(batch) >= batch_size:
                        yield _list_chunk(row, batch)
                        row += len(batch)
                        batch = []
        except _COMPRESSION_ERRORS as exc:
            raise _compression_error(path, exc) from None
        if batch:
            yield _list_chunk(row, batch)

    return DumpSource(
        path=path,
        header=header,
        collections=collections,
        total=None,
        streamed=True,
        _chunks=gen(),
        size_hint=os.path.getsize(path),
    )


def _scalar_json(event: str, value: Any) -> bytes:
    if event == "string":
        return msgspec.json.encode(value)
    if event == "number":
        return str(value).encode()  # int, or the Decimal ijson gives (exact)
    if event == "boolean":
        return b"true" if value else b"false"
    return b"null"


def _serialized_items(stream: Any) -> Iterator[bytes]:
    """Each top-level ``memories`` item as JSON text, rebuilt from ijson's flat events without
    building Python values or recursing: the path for a file holding a too-deep memory (which
    ``normalize`` then rejects with its reason). Slower than ``ijson.items``; only such files take it."""
    import ijson

    events = ijson.basic_parse(stream, use_float=False)
    depth, key = 0, None
    for event, value in events:  # walk to the top-level "memories" array
        if depth == 1 and event == "map_key":
            key = value
        elif event in ("start_map", "start_array"):
            depth += 1
            if depth == 2 and key == "memories":
                break
        elif event in ("end_map", "end_array"):
            depth -= 1
    parts: list[bytes] = []
    stack: list[list[Any]] = []  # [is_array, items so far] per open container

    def comma() -> None:
        if stack and stack[-1][0]:
            if stack[-1][1]:
                parts.append(b",")
            stack[-1][1] += 1

    for event, value in events:
        if not stack and event == "end_array":
            return
        if event == "map_key":
            if stack[-1][1]:
                parts.append(b",")
            stack[-1][1] += 1
            parts.append(msgspec.json.encode(value) + b":")
            continue
        if event in ("start_map", "start_array"):
            comma()
            parts.append(b"{" if event == "start_map" else b"[")
            stack.append([event == "start_array", 0])
            continue
        if event in ("end_map", "end_array"):
            parts.append(b"}" if event == "end_map" else b"]")
            stack.pop()
        else:
            comma()
            parts.append(_scalar_json(event, value))
        if not stack:
            yield b"".join(parts)
            parts = []


def _list_chunk(start: int, rows: list[bytes]) -> Chunk:
    return Chunk(start, len(rows), b"[" + b",".join(rows) + b"]", lambda: rows)


def _scan_top_level(path: str) -> tuple[dict[str, Any], Any, bool, bool]:
    """One ijson pass over the whole file: validates it, builds every top-level value but memories.

    Memory items are only parsed (events skipped), so memory use stays bounded. Returns ``(header,
    collections, has memories, some memory nests deeper than jsonio.MAX_DEPTH)``.
    """
    import ijson

    header: dict[str, Any] = {}
    collections: Any = None
    has_memories = False
    try:
        with open_binary(path) as f:
            head = f.read(3)
            stream = f if head == BOM else _Prefixed(head, f)
            # basic_parse: no dotted prefixes (they grow with depth: quadratic memory on a
            # value nested 100,000 deep)
            events = ijson.basic_parse(stream, use_float=False)
            try:
                event, value = next(events)
            except StopIteration:
                raise BadInput(f"{path}: empty file") from None
            if event != "start_map":
                raise BadInput(
                    f"{path}: top level is {_event_kind(event)}, expected an object with a 'memories' list"
                )
            key: Any = None
            builder: Any = None
            deep = False
            depth = 1  # tracked by events, not prefixes: a top-level key "" has prefix ""
            in_memories = False
            for event, value in events:
                if depth == 1:
                    if event == "map_key":
                        key = value
                        continue
                    if event == "end_map":
                        break
                    if key == "memories":
                        if event != "start_array":
                            raise BadInput(f"{path}: 'memories' is not a list")
                        has_memories = in_memories = True
                        depth += 1
                        continue
                    builder = ijson.ObjectBuilder()
                    builder.event(event, value)
                    if event in ("start_map", "start_array"):
                        depth += 1
                    else:
                        _store(header, key, builder.value)
                    continue
                if event in ("start_map", "start_array"):
                    depth += 1
                    if depth > jsonio.MAX_DEPTH + 2:  # the top object, memories, the memory
                        if not in_memories:
                            raise BadInput(f"{path}: top-level key {key!r} is {jsonio.TOO_DEEP}")
                        deep = True
                elif event in ("end_map", "end_array"):
                    depth -= 1
                if in_memories:
                    if depth == 1:
                        in_memories = False
                    continue
                builder.event(event, value)
                if depth == 1:
                    _store(header, key, builder.value)
            # anything after the top-level object is trailing garbage
            for _ in events:
                raise BadInput(
                    f"{path}: not valid JSON: trailing garbage after the top-level value"
                )
    except BadInput:
        raise
    except _COMPRESSION_ERRORS as exc:
        raise _compression_error(path, exc) from None
    except Exception as exc:  # ijson.JSONError, IncompleteJSONError
        raise _ijson_problem(path, exc) from None
    collections = header.pop(_COLLECTIONS, None)
    if any(k.startswith("memories.") for k in header):
        # ijson names items by dotted prefix: such a key would be confused with memory items
        raise _PrefixClash()
    return _exactify(header), _exactify(collections), has_memories, deep


_COLLECTIONS = ("collections",)  # a key no JSON object can have, to park collections in header


class _PrefixClash(Exception):
    """A top-level key ijson's dotted prefixes cannot tell from the memories items."""


def _store(header: dict[Any, Any], key: str, value: Any) -> None:
    header[_COLLECTIONS if key == "collections" else key] = value


def _exactify(value: Any) -> Any:
    """ijson gives Decimal for every non-integer; turn the ones a float holds exactly into floats."""
    return jsonio.loads(jsonio.dumps(value)) if value is not None else None


def open_dump(
    path: str | os.PathLike, *, batch_size: int = DEFAULT_BATCH, stream: bool | None = None
) -> DumpSource:
    """Open a dump file for conversion; whole-file problems raise BadInput before any row is read.

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
        return _read_jsonl(spath, min(batch_size, STREAM_BATCH))
    if not reads_whole(spath, stream):
        return _read_json_streaming(spath, min(batch_size, STREAM_BATCH))
    return _read_json_whole(spath, batch_size)

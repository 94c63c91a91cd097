"""Reader 1: a whole-file ``.json`` mapped (or decompressed) into memory and scanned once by
msgspec; memories are zero-copy slices cut into exact spans, each decoded in place between the
``[``/``]`` that ``bracketed`` writes over its neighbours. Files nesting deeper than msgspec can
recurse take ``deep_top_and_memories`` (an iterative split)."""

from __future__ import annotations

import mmap
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from longmem_etl import jsonio
from longmem_etl.dumps.readers.base import (
    LIST_RAW,
    TOP,
    WS,
    WS_BYTES,
    Chunk,
    DumpSource,
    Misplaced,
    Span,
    address,
    check_header,
    msgspec_problem,
)
from longmem_etl.dumps.readers.compressed import read_all_bytes
from longmem_etl.errors import BadInput
from longmem_etl.jsonio import raw_kind


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


def span_sizes(total: int, size: int, first: int | None = None) -> Iterator[int]:
    """Memories per span: ``first``, doubling up to ``size``, then ``size`` (without ``first``:
    ``size`` throughout). Small first spans hand the first rows over sooner (`migrate` sends
    them while the rest converts); later ones keep the per-batch overhead low."""
    step = min(first, size) if first else size
    done = 0
    while done < total:
        yield min(step, total - done)
        done += step
        step = min(step * 2, size)


def exact_spans(data: Any, memories: list[Any], size: int, first: int | None = None) -> list[Span]:
    """Spans of ``size`` memories each (the first ones smaller with ``first``: `span_sizes`),
    from the raw slices a full scan of ``data`` gave."""
    base = address(data)
    spans = []
    i = 0
    for count in span_sizes(len(memories), size, first):
        part = memories[i : i + count]
        i += count
        first_byte = address(part[0]) - base
        spans.append(Span(first_byte, address(part[-1]) - base + len(part[-1]), len(part)))
    return spans


def inplace_chunks(data: Any, memories: list[Any], spans: list[Span]) -> Iterator[Chunk]:
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
    offset = address(data) - address(mapped)  # the BOM, if any, was cut off the front
    lo = (offset + span.first) // mmap.PAGESIZE * mmap.PAGESIZE
    hi = min(len(mapped), -(-(offset + span.end + 1) // mmap.PAGESIZE) * mmap.PAGESIZE)
    if hi > lo:
        mapped.madvise(advice, lo, hi - lo)


def span_raws(data: Any, span: Span) -> list[Any]:
    """Each memory's raw JSON in ``span`` (zero-copy slices of ``data``); Misplaced when the span
    does not parse as a run of JSON values (only possible for a guessed span)."""
    with bracketed(data, span.first, span.end) as body:
        try:
            return LIST_RAW.decode(body)
        except msgspec.DecodeError:  # (ValidationError is a subclass)
            raise Misplaced(f"bytes {span.first}-{span.end} are not a run of memories") from None
        except RecursionError:  # a too-deep row
            if span.count is None:  # a guess is proven only by parsing: redo with exact spans
                raise Misplaced(f"bytes {span.first}-{span.end} hold a too-deep memory") from None
            items, _ = jsonio.container_items(body, 0)  # exact: split without recursion
            return [body[i:j] for i, j in items]


def header_of(path: str, top: dict[str, Any]) -> tuple[dict[str, Any], list[Any] | None]:
    """``(header, collections)`` from the raw top-level keys other than ``memories``."""
    for key, value in top.items():
        if jsonio.too_deep(value):
            raise BadInput(f"{path}: top-level key {key!r} is {jsonio.TOO_DEEP}")
    try:
        collections_raw = top.pop("collections", None)
        collections = jsonio.loads(collections_raw) if collections_raw is not None else None
        header = {k: jsonio.loads(v) for k, v in top.items()}
    except msgspec.DecodeError as exc:
        raise BadInput(f"{path}: {msgspec_problem(exc)}") from None
    check_header(path, header, collections)
    return header, collections


class _TopMemories(msgspec.Struct):
    memories: list[msgspec.Raw]


TOP_MEMORIES = msgspec.json.Decoder(_TopMemories)


def top_and_memories(path: str, data: Any) -> tuple[list[Any], dict[str, Any]]:
    """``(memories as raw slices, other top-level keys as raw)`` in ONE scan of the big file.

    The scan validates the whole document and slices the memories; the other keys are then decoded
    from a small copy of the file with the memories array cut out (it lies between the byte before
    the first item and the byte after the last). Unusual shapes take the simple two-scan way, which
    also gives the precise error messages.
    """
    try:
        memories = TOP_MEMORIES.decode(data).memories
    except msgspec.ValidationError:  # (a subclass of DecodeError) no / not-a-list memories
        memories = None
    except msgspec.DecodeError as exc:
        raise BadInput(f"{path}: {msgspec_problem(exc)}") from None
    if memories:
        base = address(data)
        i = address(memories[0]) - base - 1
        j = address(memories[-1]) - base + len(memories[-1])
        while i > 0 and data[i] in WS_BYTES:
            i -= 1
        while j < len(data) - 1 and data[j] in WS_BYTES:
            j += 1
        if data[i] == 0x5B and data[j] == 0x5D:  # [ ... ]
            try:
                top = TOP.decode(bytes(data[:i]) + b"[]" + bytes(data[j + 1 :]))
            except msgspec.DecodeError as exc:  # e.g. a key that is not valid UTF-8
                raise BadInput(f"{path}: {msgspec_problem(exc)}") from None
            top.pop("memories", None)
            return memories, top
    try:
        top = TOP.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadInput(f"{path}: {msgspec_problem(exc)}") from None
    if "memories" not in top:
        raise BadInput(f"{path}: no 'memories' list at the top level")
    try:
        memories = LIST_RAW.decode(top.pop("memories"))
    except msgspec.ValidationError:
        raise BadInput(f"{path}: 'memories' is not a list") from None
    return memories, top


_KEY_COLON = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")[ \t\r\n]*:[ \t\r\n]*', re.S)


def deep_top_and_memories(path: str, data: Any, first: int) -> tuple[list[Any], dict[str, Any]]:
    """``top_and_memories`` for a file msgspec cannot take in one call because some value nests
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
                raise BadInput(f"{path}: memory {n}: {msgspec_problem(exc)}") from None
    if memories is None:
        raise BadInput(f"{path}: no 'memories' list at the top level")
    return memories, top


def read_json_whole(path: str, batch_size: int, first_batch: int | None = None) -> DumpSource:
    data = read_all_bytes(path)
    first = WS.match(data).end()  # type: ignore[union-attr]  # no copy, unlike lstrip()
    stripped = bytes(data[first : first + 64])
    if stripped[:1] != b"{":
        try:
            msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise BadInput(f"{path}: {msgspec_problem(exc)}") from None
        except RecursionError:
            pass  # nested too deep to validate; its kind is the answer either way
        raise BadInput(
            f"{path}: top level is {raw_kind(stripped)}, expected an object with a 'memories' list"
        )
    try:
        memories, top = top_and_memories(path, data)
    except RecursionError:  # a memory nested hundreds deep: split without recursion
        memories, top = deep_top_and_memories(path, data, first)
    header, collections = header_of(path, top)
    spans = exact_spans(data, memories, batch_size, first_batch)
    return DumpSource(
        path=path,
        header=header,
        collections=collections,
        total=len(memories),
        streamed=False,
        _chunks=inplace_chunks(data, memories, spans),
        spans=spans,
        data=data,
    )

"""Reader 2: a whole-file ``.json`` cut at *guessed* boundaries between memories, without a full
scan (``convert``'s worker processes parse each span; one that does not parse raises ``Misplaced``
and the file is read again by ``whole``)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from longmem_etl.dumps.readers.base import TOP, WS, WS_BYTES, DumpSource, Misplaced, Span
from longmem_etl.dumps.readers.compressed import read_all_bytes
from longmem_etl.dumps.readers.whole import header_of, span_raws
from longmem_etl.errors import BadInput

_MEMORIES_KEY = re.compile(rb'"memories"[ \t\r\n]*:[ \t\r\n]*\[')
_ANY_SEPARATOR = re.compile(rb"\}[ \t\r\n]*,[ \t\r\n]*\{")
_FIRST_KEY = re.compile(rb'[ \t\r\n]*"[^"\\]*"')
_LEARN_TRIES = 16
_LEARN_BYTES = 1 << 20


def _closing_bracket(data: Any) -> int | None:
    """Index of the ``]`` just before the final ``}`` of the file, if the file ends that way."""
    j = len(data) - 1
    for want in (0x7D, 0x5D):  # } then ]
        while j >= 0 and data[j] in WS_BYTES:
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
        top = TOP.decode(bytes(data[:opening]) + b"[]" + bytes(data[closing + 1 :]))
        if bytes(top.pop("memories", b"")) != b"[]":
            return None
        header, collections = header_of(path, top)
    except (msgspec.DecodeError, BadInput, RecursionError):
        return None
    first = opening + 1
    spans: list[Span] = []
    if WS.match(data, first).end() < closing:  # type: ignore[union-attr]
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

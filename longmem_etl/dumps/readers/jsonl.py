"""Reader 3: JSONL (plain or compressed), always streamed in 8 MiB blocks; the first non-blank
line is the header when it looks like one (the rule in ``dumps.read``), every other line one memory, and a
broken line is a whole-file problem (``Chunk.check``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import msgspec

from longmem_etl import jsonio
from longmem_etl.dumps.readers.base import (
    BOM,
    JSONL_BLOCK,
    LIST_RAW,
    Chunk,
    DumpSource,
    check_header,
    msgspec_problem,
)
from longmem_etl.dumps.readers.compressed import COMPRESSION_ERRORS, compression_error, open_binary
from longmem_etl.errors import BadInput

_HEADER_DEC = msgspec.json.Decoder(dict[str, msgspec.Raw])
_HEADER_KEYS = frozenset({"format_version", "tenant", "collections"})


def _jsonl_header(line: bytes) -> dict[str, Any] | None:
    """The header dict when ``line`` is a header line (the rule in ``dumps.read``), else None."""
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


def _line_problem(path: Any, lineno: int, line: bytes) -> BadInput:
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return BadInput(f"{path}: line {lineno}: {msgspec_problem(exc)}")
    return BadInput(f"{path}: line {lineno}: not valid JSON")  # pragma: no cover


def read_jsonl(path: str, batch_size: int) -> DumpSource:
    try:
        f = open_binary(path)
        first = f.readline()
    except COMPRESSION_ERRORS as exc:
        raise compression_error(path, exc) from None
    if first.startswith(BOM):
        first = first[len(BOM) :]
    lineno = 1
    # skip leading blank lines
    while first and not first.strip():
        try:
            first = f.readline()
        except COMPRESSION_ERRORS as exc:
            raise compression_error(path, exc) from None
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
            except COMPRESSION_ERRORS as exc:
                raise compression_error(path, exc) from None

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

    return DumpSource.streaming(path, header, collections, gen(), size)


def _check_lines(path: Any, batch: list[bytes], lines: list[int]) -> None:
    """Every line must be exactly one JSON value (a broken line is a whole-file problem)."""
    try:
        decoded = LIST_RAW.decode(b"[" + b",".join(batch) + b"]")
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

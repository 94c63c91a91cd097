"""JSON encode/decode that never changes a number.

Dumps carry arbitrary JSON in ``metadata`` and unknown fields: integers beyond 64 bits and float
literals a double cannot hold (``1e400``, ``0.10000000000000001``). The stdlib and the default
msgspec decoder silently round or refuse those. Here:

- integers decode to Python ``int`` (any size);
- a float literal decodes to ``float`` when the float's shortest repr is the same number, otherwise
  to ``decimal.Decimal`` holding the literal exactly;
- ``dumps`` writes ``Decimal`` as a bare JSON number and passes ``msgspec.Raw`` through verbatim,
  so ``dumps(loads(b))`` is the same JSON value as ``b``.

Use these (not ``json``) wherever dump values are decoded or re-encoded.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

Raw = msgspec.Raw


def _exact_float(literal: str) -> float | Decimal:
    """A float when it is the same number as the literal, else the literal as a Decimal."""
    try:
        value = float(literal)
    except (OverflowError, ValueError):  # pragma: no cover - float() takes any JSON number
        return Decimal(literal)
    if not math.isfinite(value):
        return Decimal(literal)
    shortest = repr(value)
    if shortest == literal:
        return value
    try:
        if Decimal(shortest) == Decimal(literal):
            return value
    except InvalidOperation:  # pragma: no cover
        pass
    return Decimal(literal)


exact_float = _exact_float
"""The float rule of `loads` (a float literal -> ``float`` or ``Decimal``), for other decoders."""

_decoder = msgspec.json.Decoder(float_hook=_exact_float)
_encoder = msgspec.json.Encoder(decimal_format="number")


def loads(data: bytes | bytearray | memoryview | str | msgspec.Raw) -> Any:
    """Decode JSON keeping every number exact (see module docstring)."""
    if isinstance(data, msgspec.Raw):
        data = bytes(data)
    return _decoder.decode(data)


def dumps(obj: Any) -> bytes:
    """Encode to compact UTF-8 JSON; ``Decimal`` as a number, ``msgspec.Raw`` verbatim."""
    return _encoder.encode(obj)


def dumps_str(obj: Any) -> str:
    """``dumps`` as text (for Arrow string columns and manifest values)."""
    return _encoder.encode(obj).decode("utf-8")


def same_json(a: Any, b: Any) -> bool:
    """True when two decoded JSON values are equal as JSON (numbers by value, keys unordered).

    ``1 == 1.0`` here (JSON has one number type), but ``True != 1`` (JSON booleans are not numbers).
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        return Decimal(a) == Decimal(b) if a != b else True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=False))
    return type(a) is type(b) and a == b


def kind_of(value: Any) -> str:
    """A JSON value's kind as error messages say it ("an object", "a number", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def raw_kind(raw: bytes | bytearray | memoryview | msgspec.Raw) -> str:
    """`kind_of` for raw JSON text, from its first byte (never copying a whole buffer)."""
    first = bytes(raw)[:1] if isinstance(raw, msgspec.Raw) else bytes(raw[:1])
    return {
        b"{": "an object",
        b"[": "an array",
        b'"': "a string",
        b"n": "null",
        b"t": "a boolean",
        b"f": "a boolean",
    }.get(first, "a number")


# --------------------------------------------------------------------------------------------------
# Nesting depth: hostile input must be a rejected row, never a RecursionError

MAX_DEPTH = 128
"""The deepest nesting of arrays/objects accepted in one value (a memory's ``metadata`` or an unknown
field's value; the same limit the embedded store applies on every write). Decoders recurse once per
level; past ~900 levels Python's recursion limit turns a whole file into a RecursionError, and a row
accepted at 500 levels would fail later in a deeper call stack. 128 is far above real metadata."""
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels of arrays/objects"

_TOKENS = re.compile(rb'[\[\]{}"]')
_SPLIT_TOKENS = re.compile(rb'[\[\]{}",]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_WS_CHARS = b" \t\r\n"


def max_depth(data: bytes | bytearray | memoryview, *, stop: int | None = None) -> int:
    """Deepest nesting of arrays/objects in JSON text (strings skipped), without recursion;
    returns early once it exceeds ``stop``. Does not validate the JSON."""
    b = bytes(data) if isinstance(data, (memoryview, msgspec.Raw)) else data
    depth = best = pos = 0
    search = _TOKENS.search
    while m := search(b, pos):
        c = b[m.start()]
        if c == 0x22:  # "
            rest = _STRING_REST.match(b, m.end())
            if rest is None:
                break
            pos = rest.end()
            continue
        if c in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > best:
                best = depth
                if stop is not None and best > stop:
                    return best
        else:
            depth -= 1
        pos = m.end()
    return best


def too_deep(data: bytes | bytearray | memoryview | msgspec.Raw, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text nests deeper than ``limit``; cheap for the usual short or flat value
    (a depth of d needs 2d bytes and d opening brackets)."""
    b = bytes(data) if isinstance(data, (memoryview, msgspec.Raw)) else data
    if len(b) <= 2 * limit or b.count(b"[") + b.count(b"{") <= limit:
        return False
    return max_depth(b, stop=limit) > limit


def value_too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """``too_deep`` for a decoded Python value (what an API caller passes as metadata)."""
    try:
        return too_deep(dumps(value), limit)
    except RecursionError:
        return True


def container_items(data: Any, open_pos: int) -> tuple[list[tuple[int, int]], int]:
    """Byte spans ``(first, end)`` of the items of the array or object whose ``[``/``{`` is at
    ``open_pos`` (for an object each item is ``"key": value``), and the position of its closing
    bracket; iterative, so any depth works. ValueError when it is not closed. Does not validate."""
    b = data
    depth = 0
    pos = item = open_pos + 1
    spans: list[tuple[int, int]] = []
    search = _SPLIT_TOKENS.search

    def add(first: int, end: int) -> None:
        while first < end and b[first] in _WS_CHARS:
            first += 1
        while end > first and b[end - 1] in _WS_CHARS:
            end -= 1
        if end > first:
            spans.append((first, end))
        elif c == 0x2C:
            raise ValueError(f"empty item before byte {end}")

    while m := search(b, pos):
        i = m.start()
        c = b[i]
        if c == 0x22:
            rest = _STRING_REST.match(b, i + 1)
            if rest is None:
                raise ValueError("unterminated string")
            pos = rest.end()
            continue
        if c in (0x5B, 0x7B):
            depth += 1
        elif c in (0x5D, 0x7D):
            if depth == 0:
                add(item, i)
                return spans, i
            depth -= 1
        elif depth == 0:  # a comma between items
            add(item, i)
            item = i + 1
        pos = i + 1
    raise ValueError("input is truncated")


_KEY = re.compile(rb'[ \t\r\n]*("[^"\\]*(?:\\.[^"\\]*)*")[ \t\r\n]*:[ \t\r\n]*', re.S)


def object_members(data: Any) -> dict[str, bytes]:
    """The top-level ``key: raw value`` pairs of a JSON object's text, at any depth (iterative);
    ValueError when it is not an object. For naming a too-deep row (its ``id``)."""
    b = bytes(data)
    start = len(b) - len(b.lstrip())
    if b[start : start + 1] != b"{":
        raise ValueError("not an object")
    spans, _ = container_items(b, start)
    out: dict[str, bytes] = {}
    for first, end in spans:
        m = _KEY.match(b, first, end)
        if m is None:
            raise ValueError("not an object")
        out[loads(m.group(1))] = b[m.end() : end]
    return out

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

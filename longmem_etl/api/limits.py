"""What the embedded store refuses, in one place: text length, items per call, request and
metadata bytes.

The hosted API documents none of these except the 100-item batch of ``add_many``; the embedded
store picks its own, and says so. Every write path (``add``, ``add_many``, ``import_memories``,
``update``) checks the same `StoreLimits` and answers 422 naming the limit; ``seed_dump`` /
``local seed`` is the one explicit verbatim restore and checks none. Each limit is a URI query
parameter, so a test (or a user mirroring a stricter server) can set it:

    local:PATH?max_text_chars=100000&max_items=100&max_request_bytes=16777216&max_metadata_bytes=262144

``0`` switches a limit off. Sizes are bytes of compact UTF-8 JSON (what a client sends); text
length is in characters (Unicode code points). `migrate --dry-run` checks every planned item
against the target's known limits (`refusal`) before any call.
"""

from __future__ import annotations

import gc
import json
import math
from dataclasses import dataclass, fields
from itertools import chain, compress
from typing import Any, NamedTuple

import msgspec

from longmem_etl.errors import BadInput

LIMIT_KEYS = ("max_text_chars", "max_items", "max_request_bytes", "max_metadata_bytes")


# The reference: ``json.dumps`` with options builds a new encoder per call, so one is kept.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
_FAST = msgspec.json.Encoder()
_LEAVES = frozenset({str, int, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})
_PLAIN = _LEAVES | _CONTAINERS | {float}
_is_container = _CONTAINERS.__contains__
_is_float = frozenset({float}).__contains__
_NEST_LIMIT = 200  # deeper values take the reference path (and its RecursionError, if any)
_SPAN_LIMIT = 1 << 20  # containers on one level; more (shared references) take the reference path


def stdlib_json_bytes(value: Any) -> int:
    """The size the limits are defined by: compact UTF-8 JSON from the stdlib encoder, anything
    it cannot encode written as ``str(value)`` (kept as the reference `json_bytes` must equal)."""
    return len(_COMPACT.encode(value).encode("utf-8"))


class PlainJSON(NamedTuple):
    """A plain JSON value's encoding and sizes (`plain_json`)."""

    data: bytes
    """msgspec's compact JSON: what ``jsonio.dumps`` writes for this value."""
    size: int
    """``stdlib_json_bytes(value)``."""
    same_floats: bool
    """No float whose text differs between the two encoders: any part of the value is then
    ``len(jsonio.dumps(part))`` bytes for the reference too."""
    depth: int
    """Levels of arrays/objects (0 for a scalar)."""


def plain_json(value: Any) -> PlainJSON | None:
    """`PlainJSON` when ``value`` is plain JSON (exact ``dict`` with ``str`` keys, ``list``,
    ``tuple``, ``str``, ``int``, ``bool``, ``None``, finite ``float``; at most 200 levels), else None.

    Why: the store sizes every request and every item's metadata, and the stdlib encoder was the
    largest Python cost of an ``add_many``. For plain values msgspec writes the same bytes as the
    stdlib, except floats outside [1e-4, 1e16) (``1e16`` / ``1e+16``, ``0.00001`` / ``1e-05``),
    whose difference is added. Anything else (``Decimal``, ``datetime``, sets, bytes, subclasses,
    NaN, non-``str`` keys, cycles, ...) is where the two disagree or the stdlib raises: None, and
    callers use the reference. The walk goes a level at a time with C-level passes (``gc``
    referents, ``map(type, ...)``), never a Python step per value."""
    kind = type(value)
    if kind in _LEAVES:
        floats: list[float] = []
        depth = 0
    elif kind is float:
        floats, depth = [value], 0
    elif kind in _CONTAINERS:
        walked = _walk(value)
        if walked is None:
            return None
        floats, depth = walked
    else:
        return None
    delta = 0
    same = True
    for f in floats:
        if f == 0.0 or 1e-4 <= abs(f) < 1e16:  # the same text from both (tested on every exponent)
            continue
        if f != f or f in (math.inf, -math.inf):  # msgspec: null; the stdlib: NaN / Infinity
            return None
        delta += len(repr(f)) - len(_FAST.encode(f))
        same = False
    try:
        data = _FAST.encode(value)
    except Exception:  # e.g. a lone surrogate: the reference raises its own error
        return None
    return PlainJSON(data, len(data) + delta, same, depth)


def _walk(value: Any) -> tuple[list[float], int] | None:
    """(every float inside, levels) of a container of plain values, or None when not plain."""
    level: list[Any] = [value]
    floats: list[float] = []
    depth = 0
    while level:
        depth += 1
        if depth > _NEST_LIMIT or len(level) > _SPAN_LIMIT:
            return None
        refs = gc.get_referents(*level)  # the values (and the keys) of every container
        if len(refs) != sum(map(len, level)):
            # CPython lists only the values of a dict whose keys are all exact ``str``; any other
            # dict adds its keys: check them (str keys) or give up (anything else)
            dicts = [c for c in level if type(c) is dict]
            if not {*map(type, chain.from_iterable(dicts))} <= {str}:
                return None
        types = list(map(type, refs))
        kinds = set(types)
        if not kinds <= _PLAIN:
            return None
        if float in kinds:
            floats.extend(compress(refs, map(_is_float, types)))
        if kinds.isdisjoint(_CONTAINERS):
            break
        level = list(compress(refs, map(_is_container, types)))
    return floats, depth


def json_bytes(value: Any) -> int:
    """Size of ``value`` as compact UTF-8 JSON, as a client would send it: `stdlib_json_bytes`
    exactly (same number, same exceptions), through `plain_json` when it can."""
    plain = plain_json(value)
    return plain.size if plain is not None else stdlib_json_bytes(value)


def list_bytes(sizes: list[int]) -> int:
    """``json_bytes`` of a list from its elements' sizes: ``[`` ``,``-separated ``]``."""
    return 2 + sum(sizes) + max(0, len(sizes) - 1)


@dataclass(frozen=True)
class StoreLimits:
    """The embedded store's limits (defaults below); 0 means no limit."""

    max_text_chars: int = 100_000
    max_items: int = 100
    max_request_bytes: int = 16 * 1024 * 1024
    max_metadata_bytes: int = 256 * 1024

    @classmethod
    def from_query(cls, params: dict[str, str], *, where: str) -> StoreLimits:
        """The ``max_*`` parameters of a ``local:`` URI; bad values -> BadInput naming them."""
        values: dict[str, int] = {}
        for f in fields(cls):
            if f.name not in params:
                continue
            text = params[f.name]
            try:
                value = int(text)
            except ValueError:
                raise BadInput(f"{where}: {f.name}={text!r} is not a whole number") from None
            if value < 0:
                raise BadInput(f"{where}: {f.name}={text!r} must be >= 0 (0 = no limit)")
            values[f.name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # -- the checks every write path shares (each returns a reason, or None) ------------------

    def text_problem(self, text: str) -> str | None:
        if self.max_text_chars and len(text) > self.max_text_chars:
            return (
                f"text has {len(text)} characters, over the target's limit of "
                f"{self.max_text_chars} (max_text_chars)"
            )
        return None

    def metadata_problem(self, metadata: Any, size: int | None = None) -> str | None:
        """``size``: ``json_bytes(metadata)`` when the caller has it already."""
        if self.max_metadata_bytes and metadata is not None:
            n = json_bytes(metadata) if size is None else size
            if n > self.max_metadata_bytes:
                return (
                    f"metadata is {n} bytes of JSON, over the target's limit of "
                    f"{self.max_metadata_bytes} (max_metadata_bytes)"
                )
        return None

    def items_problem(self, n: int) -> str | None:
        if self.max_items and n > self.max_items:
            return f"at most {self.max_items} items per request (got {n}) (max_items)"
        return None

    def request_problem(self, payload: Any, size: int | None = None) -> str | None:
        """``size``: ``json_bytes(payload)`` when the caller has it already."""
        if self.max_request_bytes:
            n = json_bytes(payload) if size is None else size
            if n > self.max_request_bytes:
                return (
                    f"request is {n} bytes of JSON, over the target's limit of "
                    f"{self.max_request_bytes} (max_request_bytes)"
                )
        return None

    def refusal(self, item: dict[str, Any]) -> str | None:
        """Why the target would refuse this one item even when sent alone, or None."""
        text = item.get("text")
        if isinstance(text, str):
            why = self.text_problem(text)
            if why:
                return why
        why = self.metadata_problem(item.get("metadata"))
        if why:
            return why
        return self.request_problem([item])

"""The bad-input corpus: hostile dump files generated on demand (nothing big is committed).

``CORPUS`` maps a name to ``(file name, bytes factory, convert flags, expectation)``; expectation is
``("reject", reason substring)`` (exit 0, that row in rejected with the reason), ``("ok", None)``
(exit 0, nothing lost) or ``("bad", message substring)`` (exit 2, one line). Used by
``tests/test_hostile_input.py`` and ``benchmarks/fuzz_readers.py`` (as seeds).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

import zstandard

DEEP = "nested deeper than"


def _doc(*mems: bytes, head: bytes = b'"format_version":1,"tenant":"h"') -> bytes:
    return b"{" + head + b',"memories":[' + b",".join(mems) + b"]}"


def _jsonl(*mems: bytes) -> bytes:
    return b'{"format_version":1,"tenant":"h"}\n' + b"\n".join(mems) + b"\n"


OK = b'{"id":"ok","text":"fine"}'


def arrays(d: int) -> bytes:
    return b"[" * d + b"]" * d


def objects(d: int) -> bytes:
    return b'{"a":' * d + b"1" + b"}" * d


def deep_meta(d: int, kind: Callable[[int], bytes] = arrays) -> bytes:
    return b'{"id":"deep","text":"t","metadata":' + kind(d) + b"}"


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


Case = tuple[str, Callable[[], bytes], list[str], tuple[str, str | None]]
CORPUS: dict[str, Case] = {
    "deep-array-1000": ("d.json", lambda: _doc(OK, deep_meta(1000)), [], ("reject", DEEP)),
    "deep-array-100k": ("d.json", lambda: _doc(OK, deep_meta(100_000)), [], ("reject", DEEP)),
    "deep-object-100k": (
        "d.json",
        lambda: _doc(OK, deep_meta(100_000, objects)),
        [],
        ("reject", DEEP),
    ),
    "deep-array-200": ("d.json", lambda: _doc(OK, deep_meta(200)), [], ("reject", DEEP)),
    "deep-unknown-field": (
        "d.json",
        lambda: _doc(OK, b'{"id":"deep","text":"t","x":' + objects(5000) + b"}"),
        [],
        ("reject", DEEP),
    ),
    "deep-stream": ("d.json", lambda: _doc(OK, deep_meta(100_000)), ["--stream"], ("reject", DEEP)),
    "deep-jsonl": ("d.jsonl", lambda: _jsonl(OK, deep_meta(100_000)), [], ("reject", DEEP)),
    "deep-gz": (
        "d.json.gz",
        lambda: gzip.compress(_doc(OK, deep_meta(100_000))),
        [],
        ("reject", DEEP),
    ),
    "deep-zst": (
        "d.json.zst",
        lambda: zstandard.ZstdCompressor().compress(_doc(OK, deep_meta(100_000, objects))),
        [],
        ("reject", DEEP),
    ),
    "deep-jsonl-gz": (
        "d.jsonl.gz",
        lambda: gzip.compress(_jsonl(OK, deep_meta(100_000))),
        [],
        ("reject", DEEP),
    ),
    "deep-header": (
        "d.json",
        lambda: _doc(OK, head=b'"tenant":"h","x":' + arrays(100_000)),
        [],
        ("bad", DEEP),
    ),
    "deep-top-level-array": ("d.json", lambda: arrays(100_000), [], ("bad", "top level")),
    "deep-broken-memory": (
        "d.json",
        lambda: _doc(OK, b'{"id":"x","text":"t","metadata":' + b"[" * 100_000 + b"}"),
        [],
        ("bad", "not valid JSON"),
    ),
    "huge-string": (
        "h.json",
        lambda: _doc(OK, b'{"id":"big","text":"' + b"x" * (8 << 20) + b'"}'),
        [],
        ("ok", None),
    ),
    "invalid-utf8": (
        "u.json",
        lambda: _doc(OK, b'{"id":"u","text":"\xff\xfe"}'),
        [],
        ("reject", ""),
    ),
    "lone-surrogate": (
        "s.json",
        lambda: _doc(OK, b'{"id":"s","text":"\\ud800"}'),
        [],
        ("bad", "not valid JSON"),
    ),
    "nan": ("n.json", lambda: _doc(OK, b'{"id":"n","text":"t","importance":NaN}'), [], ("bad", "")),
    "infinity": (
        "i.json",
        lambda: _doc(OK, b'{"id":"n","text":"t","metadata":{"x":-Infinity}}'),
        [],
        ("bad", ""),
    ),
    "duplicate-keys": (
        "k.json",
        lambda: _doc(OK, b'{"id":"k","text":"a","text":"b"}', b'{"id":"k","text":"c"}'),
        [],
        ("reject", "duplicate id"),
    ),
    "bom-utf8": ("b.json", lambda: b"\xef\xbb\xbf" + _doc(OK), [], ("ok", None)),
    "bom-utf16": ("b16.json", lambda: _doc(OK).decode().encode("utf-16"), [], ("bad", "")),
    "truncated-gzip": (
        "t.json.gz",
        lambda: _truncate(gzip.compress(_doc(OK) * 50)),
        [],
        ("bad", ""),
    ),
    "truncated-zstd": (
        "t.json.zst",
        lambda: _truncate(zstandard.ZstdCompressor().compress(_doc(OK) * 50)),
        [],
        ("bad", ""),
    ),
    "truncated-json": ("t.json", lambda: _truncate(_doc(OK, deep_meta(1000))), [], ("bad", "")),
    "zero-bytes": ("z.json", lambda: b"", [], ("bad", "empty")),
    "nul-bytes": ("nul.json", lambda: b"\x00" * 1000, [], ("bad", "")),
    "nul-in-jsonl": ("nul.jsonl", lambda: _jsonl(OK, b"\x00\x00"), [], ("bad", "line")),
    "int-2-64": (
        "i.json",
        lambda: _doc(OK, b'{"id":"big","text":"t","importance":18446744073709551616}'),
        [],
        ("ok", None),
    ),
    "int-huge-metadata": (
        "i.json",
        lambda: _doc(OK, b'{"id":"big","text":"t","metadata":{"n":1' + b"0" * 400 + b"}}"),
        [],
        ("ok", None),
    ),
    "id-deep": (
        "id.json",
        lambda: _doc(OK, b'{"id":' + arrays(5000) + b',"text":"t"}'),
        [],
        ("reject", ""),
    ),
    "row-not-object": (
        "r.json",
        lambda: _doc(OK, b"[1,2]", b"null"),
        [],
        ("reject", "expected an object"),
    ),
}

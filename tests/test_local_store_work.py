"""The embedded store's cheaper work per call must not change what it stores, refuses or answers:
request/metadata sizes equal the stdlib reference for hostile values (same number, same error),
refusals fall at exactly the same byte, ids keep uuid4's format and stay unique, nesting is refused
at the same depth, and `export_page` (one aggregate query per window) gives the page the exported
memories give, dirty rows, NULLs, NUL characters and window edges included."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import random
import uuid
from collections import OrderedDict
from decimal import Decimal
from pathlib import Path

import pytest

from longmem_etl import jsonio
from longmem_etl.api import localpages, localrows
from longmem_etl.api.limits import StoreLimits, json_bytes, plain_json, stdlib_json_bytes
from longmem_etl.api.local import LocalStore
from longmem_etl.api.localcheck import new_ids
from longmem_etl.api.pages import page_of
from longmem_etl.errors import APIError


class Colour(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str, enum.Enum):
    A = "a-tag"


@dataclasses.dataclass
class Point:
    x: int


class Shouty:
    def __str__(self) -> str:
        return "SHOUTY ✓"


class Sub(str):
    pass


def _nested(depth: int) -> object:
    value: object = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


FLOATS = [
    0.0,
    -0.0,
    0.1,
    0.591,
    1e-4,
    9.999999999999999e-05,
    1e-5,
    1.5e-7,
    -2.5e-9,
    1e-10,
    5e-324,
    2.2250738585072014e-308,
    9999999999999998.0,
    1e16,
    -1e16,
    1.2345678901234568e17,
    1e22,
    1.7976931348623157e308,
]

HOSTILE = [
    2**70,
    -(2**70),
    2**64,
    2**63,
    -(2**63) - 1,
    *FLOATS,
    {"f": FLOATS, "i": [2**70, -1, 0]},
    float("nan"),
    float("inf"),
    -float("inf"),
    {"x": float("nan")},
    "plain ascii",
    "é ✓ 日本 😀",
    '\x00\x01\x1f\x7f\u2028\u2029"\\/\b\f\n\r\t',
    {"é": "✓", "😀": ["日本", {"\n": "\t"}]},
    _nested(10),
    _nested(199),
    _nested(250),
    [[[]]],
    {},
    [],
    (1, "two", 3.5e-8),
    [True, False, None, 1, 1.0],
    Decimal("0.10000000000000001"),
    {"d": Decimal("1E+400"), "n": Decimal("NaN")},
    dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    dt.date(2025, 1, 2),
    dt.timedelta(days=1, hours=2),
    uuid.UUID(int=7),
    {1, 2},
    frozenset({"a"}),
    b"bytes\x00\xff",
    bytearray(b"ab"),
    Colour.RED,
    Level.HIGH,
    Tag.A,
    Point(1),
    Shouty(),
    Sub("sub"),
    OrderedDict(a=1),
    {1: "int key", 2.5: "float key", 1e16: "big float key", None: "n"},
    {True: "bool key"},
    {"k": [Shouty(), Decimal("2"), {1, 2}]},
    complex(1, 2),
    jsonio.Raw(b'{"raw":1}'),
]


def _outcome(fn, value):
    try:
        return ("size", fn(value))
    except Exception as exc:  # the same error type is part of the contract
        return ("error", type(exc))


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: type(v).__name__)
def test_sizes_equal_the_stdlib_reference_for_hostile_values(value) -> None:
    assert _outcome(json_bytes, value) == _outcome(stdlib_json_bytes, value)
    assert _outcome(json_bytes, [value, {"m": value}]) == _outcome(
        stdlib_json_bytes, [value, {"m": value}]
    )


def test_errors_are_the_references() -> None:
    cyclic: list = []
    cyclic.append(cyclic)
    for value in ["\ud800", {"k": "x\udfff"}, cyclic, {(1, 2): "tuple key"}, _nested(5000)]:
        ref = _outcome(stdlib_json_bytes, value)
        assert ref[0] == "error"  # the reference raises: so must the fast path
        assert _outcome(json_bytes, value) == ref
        assert plain_json(value) is None


def test_random_plain_values_match_and_say_what_msgspec_writes() -> None:
    rng = random.Random(15)

    def leaf():
        r = rng.random()
        if r < 0.3:
            return rng.choice(["", "x", "é✓", "\n\x00", "日本語" * rng.randrange(3)])
        if r < 0.5:
            m, e = rng.uniform(-10, 10), rng.randrange(-330, 310)
            try:
                f = m * 10.0**e
            except OverflowError:
                return m
            return f if math.isfinite(f) else m
        if r < 0.7:
            return rng.choice([0, -1, 2**31, 2**70, -(2**65)])
        return rng.choice([True, False, None])

    def value(depth=0):
        if depth > 4 or rng.random() < 0.4:
            return leaf()
        if rng.random() < 0.5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{i}é": value(depth + 1) for i in range(rng.randrange(4))}

    for _ in range(2000):
        v = value()
        plain = plain_json(v)
        ref = stdlib_json_bytes(v)
        assert plain is not None and plain.size == ref
        assert plain.data == jsonio.dumps(v)  # the stored text of a plain value
        assert plain.depth == jsonio.max_depth(plain.data)
        if plain.same_floats:
            assert len(plain.data) == ref


@pytest.fixture
def store(tmp_path: Path):
    s = LocalStore(tmp_path / "t.db")
    yield s
    s.close()


def _limited(tmp_path: Path, name: str, **limits: int) -> LocalStore:
    return LocalStore(tmp_path / f"{name}.db", limits=StoreLimits(**limits))


# Values whose msgspec text is NOT the stdlib's size: exponent floats (both directions), non-ASCII,
# and a Decimal (the reference path: written as a quoted string by the stdlib's default=str).
TRICKY_META = [
    {"f": 1e16, "g": 1.5e-7, "t": "日本 ✓"},
    {"small": 1.5212603486793025e-05, "list": [-0.0, "✓"]},
    {"dec": Decimal("0.10000000000000001"), "big": 2**70},
]


@pytest.mark.parametrize("meta", TRICKY_META, ids=["exp", "fixed-vs-exp", "decimal"])
def test_metadata_limit_refuses_at_exactly_the_same_byte(tmp_path: Path, meta) -> None:
    size = stdlib_json_bytes(meta)
    assert size != len(jsonio.dumps(meta))  # the case where a naive msgspec size would be wrong
    at = _limited(tmp_path, "at", max_metadata_bytes=size)
    assert at.add_many([{"text": "fits", "metadata": meta}])["created"] == 1
    assert at.import_memories([{"text": "fits", "metadata": meta}])["imported"] == 1
    under = _limited(tmp_path, "under", max_metadata_bytes=size - 1)
    for call in (
        lambda: under.add_many(["ok", {"text": "over", "metadata": meta}]),
        lambda: under.import_memories([{"text": "over", "metadata": meta}]),
        lambda: under.add("over", metadata=meta),
    ):
        with pytest.raises(APIError, match=f"metadata is {size} bytes of JSON") as err:
            call()
        assert err.value.status == 422
    assert under.count() == 0  # nothing refused was written
    at.close()
    under.close()


@pytest.mark.parametrize("meta", TRICKY_META, ids=["exp", "fixed-vs-exp", "decimal"])
def test_request_limit_refuses_at_exactly_the_same_byte(tmp_path: Path, meta) -> None:
    items = [{"text": "é" * 7, "metadata": meta, "importance": 1e-5}, "plain"]
    size = stdlib_json_bytes(items)
    at = _limited(tmp_path, "at", max_request_bytes=size)
    assert at.add_many(items)["created"] == 2
    under = _limited(tmp_path, "under", max_request_bytes=size - 1)
    with pytest.raises(APIError, match=f"request is {size} bytes of JSON"):
        under.add_many(items)
    mems = [{"text": "é" * 7, "metadata": meta, "collection": "c"}]
    size = stdlib_json_bytes(mems)
    assert _limited(tmp_path, "imp", max_request_bytes=size).import_memories(mems)["imported"] == 1
    with pytest.raises(APIError, match=f"request is {size} bytes of JSON"):
        _limited(tmp_path, "imp2", max_request_bytes=size - 1).import_memories(mems)
    assert under.count() == 0


def test_metadata_stored_is_what_it_was(store: LocalStore) -> None:
    """The stored metadata text comes from the sizing pass for plain items: the same JSON."""
    metas = [*TRICKY_META, None, {}, {"deep": _nested(20)}]
    ids = store.add_many([{"text": f"m{i}", "metadata": m} for i, m in enumerate(metas)])["ids"]
    for mid, meta in zip(ids, metas, strict=True):
        got = store.get(mid)["metadata"]
        assert jsonio.same_json(got, meta if meta is not None else {})


def test_nesting_is_refused_at_the_same_depth(store: LocalStore) -> None:
    """The plain path skips the per-item depth scan when the request is shallow enough; the
    boundary must stay where `localrows.too_deep` puts it, on both write paths."""
    for depth in range(jsonio.MAX_DEPTH - 3, jsonio.MAX_DEPTH + 4):
        item = {"text": "x", "metadata": {"m": _nested(depth)}}
        deep = localrows.too_deep(item)
        for call in (store.add_many, store.import_memories):
            if deep:
                with pytest.raises(APIError, match="nested deeper than"):
                    call([item])
            else:
                call([item])
    assert any(localrows.too_deep({"m": _nested(d)}) for d in range(120, 140))


def test_ids_are_uuid4_strings_and_unique(store: LocalStore) -> None:
    ids = new_ids(50_000)
    assert len(set(ids)) == len(ids)
    for i in ids[:5000]:
        u = uuid.UUID(i)
        assert str(u) == i and u.version == 4 and u.variant == uuid.RFC_4122
    assert new_ids(0) == []
    got = store.add_many([f"t{i}" for i in range(100)], collection="c")["ids"]
    assert len(set(got)) == 100 and all(str(uuid.UUID(i)) == i for i in got)
    stored = [m["id"] for m in store.export_account()["memories"]]
    assert stored == got  # in the order the items were given
    imp = store.import_memories([{"id": "old", "text": "x"}])
    assert imp["imported"] == 1 and "old" not in {m["id"] for m in store.list_memories()}


def _seed_mixed(store: LocalStore) -> None:
    """Clean rows with NULLs, empty and NUL-bearing strings, non-ASCII, then dirty seeded rows."""
    mems = [
        {"id": "a", "collection": "c", "text": "plain", "container_tag": None},
        {"id": "b", "collection": "c", "text": "nul\x00inside é", "metadata": {"k": "日本"}},
        {"id": "c", "text": "", "created_at": "2025-01-01T00:00:00Z"},  # no collection
        {"id": "d", "collection": 5, "text": "dirty collection"},
        {"id": "e", "collection": "c", "text": ["not", "a", "string"], "pinned": "yes"},
        {"id": "f", "collection": "c", "text": "tagged", "container_tag": "u-1", "metadata": None},
        {"id": 7, "collection": "c", "text": "numeric id"},
    ]
    store.seed_dump({"tenant": "t", "memories": mems})
    store.add_many(
        [{"text": f"n{i} ✓", "metadata": {"i": i}, "container_tag": "x"} for i in range(5)],
        collection="c",
    )


def _pages(store: LocalStore, limit: int) -> list:
    rows, cursor = [], None
    while True:
        page = store.export_page(cursor=cursor, limit=limit)
        rows += page["memories"].to_pylist()
        cursor = page["next"]
        if cursor is None:
            return rows


@pytest.mark.parametrize("batch", [1, 2, 3, 10_000])
@pytest.mark.parametrize("limit", [1, 4, 25_000])
def test_export_page_is_the_page_of_the_exported_memories(
    store: LocalStore, monkeypatch, batch: int, limit: int
) -> None:
    """Windows of any size (dirty ones read the plain way) and pages of any limit give exactly
    `page_of` the exported memories, each once, in order."""
    _seed_mixed(store)
    monkeypatch.setattr(localpages, "_BATCH", batch)
    expected = page_of(store.export_account()["memories"]).to_pylist()
    got = _pages(store, limit)
    for row in got + expected:  # metadata / raw are JSON texts: compare as values
        for key in ("metadata", "raw"):
            if row[key] is not None:
                row[key] = json.loads(row[key])
    assert got == expected
    assert sum(r["raw"] is not None for r in got) == 3  # d, e and the numeric id


def test_export_page_after_deletes_and_at_the_end(store: LocalStore) -> None:
    ids = store.add_many([f"t{i}" for i in range(10)])["ids"]
    for mid in ids[1::2]:
        store.delete(mid)
    first = store.export_page(limit=3)
    assert first["memories"].column("id").to_pylist() == ids[0:6:2]
    rest = store.export_page(cursor=first["next"], limit=3)
    assert rest["memories"].column("id").to_pylist() == ids[6::2] and rest["next"] is None
    assert store.export_page(cursor="999999", limit=3)["memories"].num_rows == 0


def test_export_page_of_bytes_that_are_not_utf8_is_a_503(store: LocalStore) -> None:
    """As reading the value as ``str`` did: a file edited by another tool, not a crash."""
    store.add_many(["fine", "soon broken"])
    with store._write() as conn:
        conn.execute("UPDATE memories SET text = CAST(x'66ff' AS TEXT) WHERE text = 'soon broken'")
    with pytest.raises(APIError) as err:
        store.export_page()
    assert err.value.status == 503 and "UTF-8" in err.value.message


def test_add_many_rows_are_what_the_general_codec_writes(store: LocalStore) -> None:
    """`add_many` builds its rows field by field (`localrows.fresh_row`, no memory dicts); each
    stored row must be column for column what `localrows.encode` writes for the memory it
    exports, or exports and later reads would change."""
    items = [
        "bare string",
        {"text": "all fields", "importance": 0, "category": "c", "source": "s"},
        {"text": "meta", "metadata": TRICKY_META[0], "container_tag": "u"},
        {"text": "dec", "metadata": TRICKY_META[2], "importance": 1},
        {"text": "null meta", "metadata": None, "container_tag": None},
    ]
    store.add_many(items, collection="c", importance=0.25, category="d", source="sdk")
    conn = store._conn()
    for row in conn.execute(f"SELECT {', '.join(localrows.COLUMNS)} FROM memories"):
        stored = tuple(row)
        encoded = localrows.encode(localrows.decode(row))
        assert stored == tuple(encoded[c] for c in localrows.COLUMNS)

"""Property: dump -> snapshot -> dump gives the same JSON values, key for key, at every level.

Arbitrary JSON (big integers, floats a double cannot hold, unicode keys) in metadata, unknown memory
fields, collections and unknown top-level keys; arbitrary unicode text (astral, NUL, RTL, controls);
known fields absent, null or valid; timestamps with offsets, fractions and nanoseconds. Both the
whole-file and the streaming readers, JSON and JSONL outputs.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longmem_etl import jsonio
from longmem_etl.dumps.compare import dump_differences
from longmem_etl.schema import KNOWN_MEMORY_FIELDS
from longmem_etl.snapshots import convert_dump, open_snapshot
from longmem_etl.snapshots.dump import write_dump

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

texts = st.text(
    st.characters(codec="utf-8", categories=None, exclude_categories=("Cs",)), max_size=30
) | st.sampled_from(["", "a\x00b", "שלום \u202e עולם", "😀👨‍👩‍👧", "𝔘𝔫𝔦", "line\nbreak\r\t"])

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: d.is_finite() and abs(d.adjusted()) < 5000
    ),
    st.sampled_from([Decimal("1e400"), Decimal("0.10000000000000001"), 2**64 + 1, -0.0, 5e-324]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def timestamps(draw):
    base = datetime(2000, 1, 1, tzinfo=timezone.utc) + timedelta(
        microseconds=draw(st.integers(0, 40 * 365 * 86400 * 10**6))
    )
    kind = draw(st.sampled_from(["Z", "+00:00", "offset", "nanos", "millis", "naive"]))
    if kind == "Z":
        return base.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind == "+00:00":
        return base.isoformat()
    if kind == "offset":
        off = timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60)))
        return base.astimezone(timezone(off)).isoformat()
    if kind == "nanos":
        return base.strftime("%Y-%m-%dT%H:%M:%S.%f") + str(draw(st.integers(0, 999))).zfill(3) + "Z"
    if kind == "millis":
        return base.strftime("%Y-%m-%dT%H:%M:%S.") + f"{base.microsecond // 1000:03d}Z"
    return base.strftime("%Y-%m-%dT%H:%M:%S")


def maybe(strategy):
    """A known field: absent (None sentinel below), null, or a valid value."""
    return st.one_of(st.just("__absent__"), st.none(), strategy)


known = {
    "collection": maybe(texts),
    "importance": maybe(numbers.filter(lambda n: not isinstance(n, bool))),
    "category": maybe(texts),
    "metadata": maybe(json_values),
    "source": maybe(texts),
    "container_tag": maybe(texts),
    "pinned": maybe(st.booleans()),
    "archived": maybe(st.booleans()),
    "created_at": maybe(timestamps()),
    "updated_at": maybe(timestamps()),
    "expires_at": maybe(timestamps()),
    "superseded_by": maybe(texts),
}
unknown_keys = texts.filter(lambda k: k not in KNOWN_MEMORY_FIELDS)


@st.composite
def memories(draw, index):
    mem = {"id": f"m{index}-" + draw(texts), "text": draw(texts)}
    for name, strategy in known.items():
        v = draw(strategy)
        if v != "__absent__":
            mem[name] = v
    mem.update(draw(st.dictionaries(unknown_keys, json_values, max_size=3)))
    keys = list(mem)
    order = draw(st.permutations(keys))
    return {k: mem[k] for k in order}


@st.composite
def dumps(draw):
    n = draw(st.integers(0, 6))
    dump = {}
    dump.update(
        draw(
            st.dictionaries(
                texts.filter(lambda k: k not in ("memories", "collections", "format_version")),
                json_values,
                max_size=3,
            )
        )
    )
    dump["tenant"] = draw(texts.filter(str.strip) | st.fixed_dictionaries({"id": texts}))
    if draw(st.booleans()):
        dump["collections"] = draw(st.lists(json_values, max_size=4))
    if draw(st.booleans()):
        dump["format_version"] = 1
    dump["memories"] = [draw(memories(i)) for i in range(n)]
    return dump


def _check(dump: dict, *, stream: bool, out_ext: str) -> None:
    raw = jsonio.dumps(dump)
    original = jsonio.loads(raw)  # what the file says, exactly
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "in.json"
        src.write_bytes(raw)
        res = convert_dump(src, Path(d) / "root", tenant="t", progress=False, stream=stream)
        assert res.rejected == 0 and res.memories == len(dump["memories"])
        snap = open_snapshot(res.path)
        assert dump_differences(original, snap.to_dump()) == []
        out = Path(d) / f"out{out_ext}"
        write_dump(res.path, out)
        data = out.read_bytes()
        if out_ext == ".jsonl":
            lines = data.splitlines()
            back = {**jsonio.loads(lines[0]), "memories": [jsonio.loads(x) for x in lines[1:]]}
        else:
            back = jsonio.loads(data)
        assert back["format_version"] == 1
        assert dump_differences(original, back) == []


@SETTINGS
@given(dumps())
def test_roundtrip_json_whole_file(dump):
    _check(dump, stream=False, out_ext=".json")


@SETTINGS
@given(dumps())
def test_roundtrip_streaming_reader_and_jsonl(dump):
    _check(dump, stream=True, out_ext=".jsonl")

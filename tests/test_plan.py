"""The plan: deterministic order, chunks that respect collection, size and byte limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longmem_etl.errors import BadInput
from longmem_etl.migrate.keys import PROVENANCE_KEY, fingerprint, marker_of
from longmem_etl.migrate.plan import assign_chunks, plan_items, summarise


def _mems(n: int, collections: int = 3) -> list[dict]:
    return [
        {
            "id": f"m{i}",
            "collection": f"c{i % collections}",
            "text": f"memory {i}",
            "container_tag": f"u{i % 4}",
            "created_at": f"2024-01-{1 + i % 28:02d}T00:00:00Z",
            "pinned": True,
            "metadata": {"n": i},
        }
        for i in range(n)
    ]


def test_chunks_never_span_collections_and_respect_size() -> None:
    items = list(plan_items(_mems(250), mode="add", source_key="M"))
    rows = sorted(
        (i.collection, i.container_tag or "", i.sort_key, i.source_id, i.nbytes) for i in items
    )
    chunks = dict(assign_chunks(((sid, c, nb) for c, _t, _k, sid, nb in rows), chunk_size=30))
    by_chunk: dict[int, set[str]] = {}
    sizes: dict[int, int] = {}
    coll = {i.source_id: i.collection for i in items}
    for sid, c in chunks.items():
        by_chunk.setdefault(c, set()).add(coll[sid])
        sizes[c] = sizes.get(c, 0) + 1
    assert all(len(v) == 1 for v in by_chunk.values())
    assert max(sizes.values()) == 30
    assert sorted(by_chunk) == list(range(len(by_chunk)))  # contiguous numbering


def test_byte_cap_splits_chunks_and_oversized_item_travels_alone() -> None:
    rows = [("a", "c", 400), ("b", "c", 400), ("c", "c", 400), ("d", "c", 5000), ("e", "c", 10)]
    got = dict(assign_chunks(rows, chunk_size=100, max_bytes=1000))
    assert got == {"a": 0, "b": 0, "c": 1, "d": 2, "e": 3}


def test_chunk_size_over_100_is_bad_input() -> None:
    with pytest.raises(BadInput, match="chunk-size"):
        list(assign_chunks([("a", "c", 1)], chunk_size=101))


def test_add_payload_carries_marker_and_keeps_per_item_fields() -> None:
    mem = {
        "id": "x1",
        "collection": "c",
        "text": "hi",
        "container_tag": "u",
        "importance": 0.3,
        "category": "fact",
        "metadata": {"a": 1},
        "pinned": True,
        "source": "crm",
    }
    (item,) = plan_items([mem], mode="add", source_key="MIG")
    payload = json.loads(item.payload)
    assert set(payload) == {"text", "container_tag", "importance", "category", "metadata", "source"}
    assert payload["metadata"]["a"] == 1
    assert marker_of(payload["metadata"]) == ("x1", "MIG")
    assert mem["metadata"] == {"a": 1}  # the source is never mutated
    (imp,) = plan_items([mem], mode="import", source_key="MIG")
    assert json.loads(imp.payload)["pinned"] is True
    (bare,) = plan_items([mem], mode="add", source_key="MIG", provenance=False)
    assert PROVENANCE_KEY not in json.loads(bare.payload)["metadata"]


def test_non_object_metadata_is_kept_next_to_the_marker() -> None:
    (item,) = plan_items([{"id": "a", "text": "t", "metadata": [1, 2]}], mode="add", source_key="M")
    meta = json.loads(item.payload)["metadata"]
    assert meta["_original_metadata"] == [1, 2] and marker_of(meta) == ("a", "M")


def test_duplicate_source_ids_stay_distinct() -> None:
    items = list(
        plan_items([{"id": "a", "text": "1"}, {"id": "a", "text": "2"}], mode="add", source_key="M")
    )
    assert [i.source_id for i in items] == ["a", "a#2"]


def test_fingerprint_ignores_whitespace_but_not_collection() -> None:
    assert fingerprint("c", None, " a  b\n") == fingerprint("c", None, "a b")
    assert fingerprint("c", None, "a") != fingerprint("d", None, "a")
    assert fingerprint("c", "t", "a") != fingerprint("c", None, "a")


def test_summary_is_deterministic_and_counts_per_collection() -> None:
    mems = _mems(450)
    a = summarise(plan_items(mems, mode="add", source_key="M"), mode="add", chunk_size=100)
    b = summarise(
        plan_items(list(reversed(mems)), mode="add", source_key="M"), mode="add", chunk_size=100
    )
    assert a.as_dict() == b.as_dict()
    assert a.items == 450 and a.chunks == 6  # 150 per collection -> 2 chunks each
    assert a.collections["c0"] == {"items": 150, "chunks": 2, "bytes": a.collections["c0"]["bytes"]}
    assert "TOTAL" in a.render()


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 3000)), max_size=400),
    chunk_size=st.integers(1, 100),
    max_bytes=st.integers(100, 20_000),
)
def test_chunking_invariants(rows: list[tuple[str, int]], chunk_size: int, max_bytes: int) -> None:
    ordered = sorted(rows, key=lambda r: r[0])  # plan order groups collections
    items = [(f"s{i}", coll, nb) for i, (coll, nb) in enumerate(ordered)]
    got = list(assign_chunks(items, chunk_size=chunk_size, max_bytes=max_bytes))
    assert [sid for sid, _ in got] == [sid for sid, _, _ in items]  # every item once, in order
    chunks: dict[int, list[tuple[str, int]]] = {}
    for (_sid, c), (_, coll, nb) in zip(got, items, strict=True):
        chunks.setdefault(c, []).append((coll, nb))
    assert sorted(chunks) == list(range(len(chunks)))
    for members in chunks.values():
        assert len(members) <= chunk_size
        assert len({coll for coll, _ in members}) == 1
        assert len(members) == 1 or sum(nb + 1 for _, nb in members) + 2 <= max_bytes


_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_LITERALS = st.sampled_from(
    ["1e16", "1e-05", "0.10000000000000001", "1e400", "-0.0", "1E+2", "2.50", "123456789012345678"]
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=12),
    meta=_JSON,
    literal=_LITERALS,
    importance=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    category=st.one_of(st.none(), st.text(max_size=5)),
    tag=st.one_of(st.none(), st.text(max_size=5)),
    marker=st.booleans(),
)
def test_fast_add_row_is_build_planned_byte_for_byte(
    text, meta, literal, importance, category, tag, marker
) -> None:
    """The column-wise planner (`fast_add_row`, used by the streamed plan) writes the same payload
    text, size and content fingerprint as the dump-form path, for any metadata: floats Python
    and msgspec render differently (1e+16 / 1e16), numbers a double cannot hold, big integers,
    a metadata value that is not an object, a source that already carries a marker."""
    from longmem_etl import jsonio
    from longmem_etl.migrate.plan import build_planned, fast_add_row

    meta_text = None if meta is None else json.dumps(meta, ensure_ascii=False)
    if isinstance(meta, dict):  # an odd number literal inside, and maybe an earlier marker
        meta_text = meta_text[:-1] + ("," if meta else "") + f'"lit":{literal}' + "}"
        if marker:
            meta_text = meta_text[:-1] + ',"_longmem_etl":{"source":"old","source_id":"x"}}'
    memory = {"id": "s", "text": text, "metadata": jsonio.loads(meta_text) if meta_text else None}
    for k, v in (("importance", importance), ("category", category), ("container_tag", tag)):
        if v is not None:
            memory[k] = v
    memory["source"] = "bench"
    want = build_planned(memory, "s", mode="add", source_key="KEY")
    got = fast_add_row("s", text, meta_text, importance, category, "bench", tag, source_key="KEY")
    assert got == (want.payload, want.nbytes, want.content)

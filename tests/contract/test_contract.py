"""Behaviour every ``LongmemAPI`` implementation must show (see conftest for the implementations)."""

from __future__ import annotations

import pytest

from longmem_etl.api.protocol import LongmemAPI
from longmem_etl.errors import APIError, Unsupported


def test_implements_the_protocol(api):
    assert isinstance(api, LongmemAPI)


def test_add_returns_the_created_memory(api):
    m = api.add(
        "Alex prefers dark mode",
        collection="notes",
        importance=0.9,
        category="preference",
        metadata={"src": "chat"},
        source="etl",
        container_tag="user-1",
    )
    assert m["id"] and m["text"] == "Alex prefers dark mode"
    assert (m["collection"], m["importance"], m["category"], m["source"], m["container_tag"]) == (
        "notes",
        0.9,
        "preference",
        "etl",
        "user-1",
    )
    assert m["metadata"] == {"src": "chat"}
    assert m["pinned"] is False and m["archived"] is False and m["created_at"]
    assert api.get(m["id"], collection="notes") == m


def test_add_many_new_ids_per_item_fields_and_never_dedupes(api):
    items = [
        "same text",
        "same text",
        {
            "text": "other",
            "container_tag": "t",
            "importance": 0.2,
            "category": "fact",
            "metadata": {"k": 1},
            "source": "s",
        },
    ]
    r1 = api.add_many(items, collection="c", category="dflt")
    r2 = api.add_many(items, collection="c", category="dflt")
    assert r1["created"] == r2["created"] == 3
    ids = r1["ids"] + r2["ids"]
    assert len(set(ids)) == 6
    mems = {m["id"]: m for m in api.list_memories(collection="c", limit=100)}
    assert set(mems) == set(ids)
    other = mems[r1["ids"][2]]
    assert (
        other["container_tag"],
        other["importance"],
        other["category"],
        other["metadata"],
        other["source"],
    ) == ("t", 0.2, "fact", {"k": 1}, "s")
    assert mems[r1["ids"][0]]["category"] == "dflt"


def test_add_many_invalid_item_is_a_4xx_and_writes_nothing(api):
    with pytest.raises(APIError) as ei:
        api.add_many(["fine", {"text": ""}], collection="c")
    assert 400 <= ei.value.status < 500 and not ei.value.retryable
    assert api.list_memories(collection="c") == []


def test_list_order_pinned_first_then_newest_and_archived_hidden(api):
    ids = [api.add(f"m{i}", collection="c")["id"] for i in range(4)]
    api.pin(ids[0], collection="c")
    api.archive(ids[2], collection="c")
    order = [m["id"] for m in api.list_memories(collection="c")]
    assert order == [ids[0], ids[3], ids[1]]
    with_archived = [m["id"] for m in api.list_memories(collection="c", include_archived=True)]
    assert with_archived == [ids[0], ids[3], ids[2], ids[1]]
    page = [
        m["id"] for m in api.list_memories(collection="c", include_archived=True, limit=2, offset=1)
    ]
    assert page == [ids[3], ids[2]]


def test_update_changes_only_given_fields(api):
    m = api.add("before", collection="c", importance=0.5, category="a", metadata={"x": 1})
    u = api.update(m["id"], collection="c", text="after")
    assert (u["text"], u["importance"], u["category"], u["metadata"]) == (
        "after",
        0.5,
        "a",
        {"x": 1},
    )
    u = api.update(m["id"], collection="c", importance=0.1, metadata={"y": 2})
    assert (u["text"], u["importance"], u["metadata"]) == ("after", 0.1, {"y": 2})
    assert u["updated_at"] >= m["updated_at"]


def test_move_delete_and_not_found(api):
    m = api.add("x", collection="a")
    api.move(m["id"], collection="a", to_collection="b")
    assert api.get(m["id"], collection="b")["collection"] == "b"
    with pytest.raises(APIError) as ei:
        api.get(m["id"], collection="a")
    assert ei.value.status == 404
    assert "b" in {c["name"] for c in api.collections()}
    api.delete(m["id"], collection="b")
    with pytest.raises(APIError):
        api.get(m["id"], collection="b")
    with pytest.raises(APIError) as ei:
        api.delete("no-such-id", collection="b")
    assert ei.value.status == 404


def test_delete_collection_removes_its_memories(api):
    api.add_many(["a", "b"], collection="gone")
    keep = api.add("c", collection="kept")
    api.delete_collection("gone")
    assert api.list_memories(collection="gone", include_archived=True) == []
    assert "gone" not in {c["name"] for c in api.collections()}
    assert api.get(keep["id"], collection="kept")["text"] == "c"


def test_pin_archive_roundtrip(api):
    m = api.add("x")
    assert api.pin(m["id"])["pinned"] is True
    assert api.pin(m["id"], pinned=False)["pinned"] is False
    assert api.archive(m["id"])["archived"] is True
    assert api.archive(m["id"], archived=False)["archived"] is False


def test_export_account_shape_and_contents(api):
    r = api.add_many(["one", "two"], collection="c")
    api.archive(r["ids"][0], collection="c")
    dump = api.export_account()
    assert {"tenant", "collections", "memories"} <= set(dump)
    assert {m["id"] for m in dump["memories"]} == set(r["ids"])  # archived included
    names = [c["name"] if isinstance(c, dict) else c for c in dump["collections"]]
    assert "c" in names


def test_import_memories_new_ids_and_skips(api):
    src = [
        {
            "id": "old-1",
            "text": "kept one",
            "collection": "x",
            "importance": 0.3,
            "metadata": {"m": 1},
        },
        {"id": "old-2", "text": "   "},
        {"id": "old-3", "text": "kept two", "collection": "y"},
    ]
    r = api.import_memories(src)
    assert (r["imported"], r["skipped"]) == (2, 1)
    assert set(r["collections"]) >= {"x", "y"}
    got = api.list_memories(collection="x")
    assert len(got) == 1 and got[0]["id"] != "old-1" and got[0]["metadata"] == {"m": 1}
    r = api.import_memories(src[:1], into_collection="z")
    assert r["imported"] == 1 and len(api.list_memories(collection="z")) == 1


def test_health_counts(api):
    r = api.add_many(
        [
            {"text": "a", "category": "p"},
            {"text": "b", "category": "p"},
            {"text": "c", "category": "q"},
        ],
        collection="h",
    )
    api.archive(r["ids"][2], collection="h")
    h = api.health(collection="h")
    for key in ("total", "stale", "expired", "supersessions", "needs_attention", "categories"):
        assert key in h
    assert h["total"] == 3 and h["categories"].get("p") == 2


def test_search_and_forget(api):
    api.add("Alex prefers dark mode in the editor", collection="s")
    api.add("Bianca is on the design team", collection="s")
    api.add("dark chocolate is Bianca's favourite", collection="t")
    hits = api.search("dark mode", collection="s")
    assert [h["text"] for h in hits][0] == "Alex prefers dark mode in the editor"
    assert all("score" in h for h in hits)
    everywhere = api.search("Bianca", collection=None, limit=10)
    assert {h["collection"] for h in everywhere} == {"s", "t"}
    assert api.search("zebra unicorn", collection="s") == []
    out = api.forget("design team Bianca", collection="s", min_score=0.5)
    assert out["deleted"] == 1
    assert [m["text"] for m in api.list_memories(collection="s")] == [
        "Alex prefers dark mode in the editor"
    ]
    assert len(api.list_memories(collection="t")) == 1


# -- the embedded store's own promises -------------------------------------------------------------


def test_add_many_refuses_more_than_100_items(local_api):
    with pytest.raises(APIError) as ei:
        local_api.add_many([str(i) for i in range(101)])
    assert 400 <= ei.value.status < 500 and "at most 100" in ei.value.message
    assert local_api.add_many([str(i) for i in range(100)])["created"] == 100


def test_offline_unsupported_methods(local_api):
    with pytest.raises(Unsupported, match="remember"):
        local_api.remember("x")


def test_export_page_covers_the_export_once(api):
    """Paged export: every exported memory exactly once, same fields, until ``next`` is None."""
    import json

    api.add_many(
        [{"text": f"note {i}", "metadata": {"i": i}} for i in range(5)], collection="notes"
    )
    api.add("tagged", collection="crm", container_tag="user-1")
    archived = api.add("old", collection="crm", metadata=None)
    api.archive(archived["id"], collection="crm")
    exported = {m["id"]: m for m in api.export_account()["memories"]}
    rows, cursor, calls = [], None, 0
    while True:
        page = api.export_page(cursor=cursor, limit=3)
        rows += page["memories"].to_pylist()
        calls += 1
        cursor = page["next"]
        if cursor is None:
            break
        assert page["memories"].num_rows == 3  # a page that is not the last one is full
    assert sorted(r["id"] for r in rows) == sorted(exported)  # each memory once
    for r in rows:
        m = exported[r["id"]]
        assert r["raw"] is None
        for f in ("collection", "container_tag", "created_at", "text"):
            assert r[f] == m.get(f)
        assert json.loads(r["metadata"]) == m.get("metadata")
    assert calls >= 1


def test_export_page_refuses_a_cursor_it_did_not_give(api):
    with pytest.raises(APIError) as exc:
        api.export_page(cursor="not-a-cursor")
    assert exc.value.status == 422

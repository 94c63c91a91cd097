"""Tenant and collection names are read one way (``longmem_etl.names``) by every reader."""

from __future__ import annotations

from longmem_etl.api.local import LocalStore
from longmem_etl.names import collection_name, collection_names, tenant_name
from longmem_etl.snapshots.layout import tenant_from_header
from longmem_etl.snapshots.writer import collections_table

ENTRIES = ["plain", {"name": "n"}, {"id": "i"}, {"slug": "s"}, {"collection": "c"}, {"x": 1}, 7]


def test_collection_entries_named_alike_by_writer_store_and_backup(tmp_path):
    expected = ["plain", "n", "i", "s", "c", None, None]
    assert [collection_name(e) for e in ENTRIES] == expected
    assert collections_table(ENTRIES).column("name").to_pylist() == expected
    assert collection_names(ENTRIES + ["plain"]) == ["plain", "n", "i", "s", "c"]
    with LocalStore(tmp_path / "t.db") as store:
        out = store.import_memories([{"text": "hi"}], collections=ENTRIES[:5])
        assert out["collections"] == ["default", "plain", "n", "i", "s", "c"]


def test_tenant_read_from_string_object_or_integer():
    assert tenant_name("acme") == "acme"
    assert tenant_name({"slug": "acme", "name": "Acme"}) == "acme"
    assert tenant_name({"id": 42}) == "42"
    assert tenant_name(True) is None and tenant_name("  ") is None
    assert tenant_from_header({"tenant": {"name": "Acme"}}) == "Acme"

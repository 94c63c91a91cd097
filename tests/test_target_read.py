"""The paged target read (`targetread.read_target_keys`): the same keys as the dict path, whatever
the page size, the backend, dirty rows or read faults; and copies of one memory split across pages
are still counted as copies by verification, holdings and repair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.api.local import LocalStore
from longmem_etl.migrate.holdings import which_held
from longmem_etl.migrate.keys import with_marker
from longmem_etl.migrate.repair import find_extras
from longmem_etl.migrate.targetread import read_target_keys
from longmem_etl.migrate.verify import compare, source_keys, target_keys

K = "KEY"


def _sorted(t: pa.Table) -> list[dict[str, Any]]:
    return sorted(t.to_pylist(), key=lambda r: (r["target_id"] or "", repr(r)))


def _memories() -> list[dict[str, Any]]:
    """Everything a target can hold: our markers, others', old ones, none, and dirty values."""
    mems: list[dict[str, Any]] = []
    for i in range(7):
        mems.append(
            {
                "id": f"own-{i}",
                "collection": "c",
                "text": f"text {i}",
                "metadata": with_marker({"n": i}, f"s{i}", K, "content"),
                "created_at": f"2025-01-0{i + 1}T00:00:00Z",
            }
        )
    mems += [
        {
            "id": "other",
            "collection": "c",
            "text": "text 1",
            "metadata": with_marker({}, "s1", "B"),
        },
        {
            "id": "old",
            "collection": "d",
            "text": "x",
            "metadata": {"_longmem_etl": {"source_id": "s2", "migration": "m1"}},
        },
        {
            "id": "plain",
            "collection": "",
            "text": "  Café\u0301  two\tspaces ",
            "metadata": {"a": [1, 2]},
        },
        {"id": "none", "text": "no metadata", "container_tag": "u"},
        {"id": "null", "collection": "e", "text": "null metadata", "metadata": None},
        {"id": "list", "collection": "e", "text": "list", "metadata": ["_longmem_etl"]},
        {
            "id": "str",
            "collection": "e",
            "text": "json in a string",
            "metadata": '{"_longmem_etl": {"source_id": "s3", "source": "KEY"}}',
        },
        {
            "id": "num-sid",
            "collection": "e",
            "text": "n",
            "metadata": {"_longmem_etl": {"source_id": 5, "source": K}},
        },
        {
            "id": "null-src",
            "collection": "e",
            "text": "n",
            "metadata": {"_longmem_etl": {"source_id": "s4", "source": None, "migration": "m"}},
        },
        {
            "id": "esc",
            "collection": "e",
            "text": "q",
            "metadata": {"_longmem_etl": {"source_id": 'a"b\\c é', "source": K}},
        },
        {"id": "not-obj", "collection": "e", "text": "q", "metadata": {"_longmem_etl": "s5"}},
        {  # escapes elsewhere in the marker: its own fields are still read as they are
            "id": "esc-other",
            "collection": "e",
            "text": "q",
            "metadata": {"_longmem_etl": {"note": 'a"b\\', "source_id": "s7", "source": K}},
        },
        {  # a marker that is a list holding what looks like one: no marker
            "id": "list-marker",
            "collection": "e",
            "text": "q",
            "metadata": {"_longmem_etl": [{"source_id": "s8", "source": K}]},
        },
        {  # a marker value that is an object: not a string
            "id": "obj-value",
            "collection": "e",
            "text": "q",
            "metadata": {"_longmem_etl": {"source_id": {"s": 9}, "source": K}},
        },
        {"id": "big", "collection": "e", "text": "q", "metadata": {"big": 2**80, "f": 1e300}},
        {
            "id": 7,
            "collection": 3,
            "text": ["not", "text"],
            "container_tag": 9,
            "metadata": with_marker({}, "s6", K),
        },
    ]
    return mems


@pytest.fixture
def target(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "t.db")
    store.seed_dump({"tenant": "t", "collections": [], "memories": _memories()})
    return store


@pytest.mark.parametrize("page_size", [1, 4, 1000])
@pytest.mark.parametrize("own_key", [None, K])
def test_same_keys_as_the_dict_path_at_any_page_size(target, page_size, own_key) -> None:
    exported = target.export_account()["memories"]
    want = target_keys(exported, own_key=own_key)
    got = read_target_keys(target, own_key=own_key, page_size=page_size)
    assert got.schema == want.schema and got.num_rows == len(_memories())
    assert _sorted(got) == _sorted(want)
    marker_only = read_target_keys(target, fingerprints=False, page_size=page_size)
    assert marker_only.column("fp").null_count == marker_only.num_rows
    assert _sorted(marker_only) == _sorted(target_keys(exported, fingerprints=False))


def test_dirty_rows_and_odd_markers_read_as_python_would(target) -> None:
    got = {r["target_id"]: r for r in read_target_keys(target, own_key=K, page_size=3).to_pylist()}
    assert got["7"]["collection"] == "3" and got["7"]["container_tag"] == "9"  # via `raw`
    assert got["str"]["prov_source_id"] == "s3"  # metadata given as JSON text
    assert got["num-sid"]["prov_source_id"] == "5"
    assert got["null-src"]["prov_key"] is None  # "source": null wins over "migration"
    assert got["old"]["prov_key"] == "m1"
    assert got["esc"]["prov_source_id"] == 'a"b\\c é'
    assert got["not-obj"]["prov_source_id"] is None and got["not-obj"]["fp"] is not None
    assert got["plain"]["collection"] == "default"
    assert got["own-0"]["fp"] is None  # matched by marker: never fingerprinted
    assert got["other"]["fp"] is not None  # another key's copy: counted by content


def test_a_backend_without_pages_and_read_faults_give_the_same_keys(target, tmp_path) -> None:
    class ExportOnly:
        def export_account(self) -> dict[str, Any]:
            return target.export_account()

    want = _sorted(read_target_keys(target, own_key=K))
    assert _sorted(read_target_keys(ExportOnly(), own_key=K, page_size=2)) == want
    flaky = open_endpoint(f"local:{tmp_path}/t.db?fail_rate=0.4&seed=3")
    assert _sorted(read_target_keys(flaky, own_key=K, page_size=2)) == want
    assert flaky._faults.calls > len(_memories()) // 2  # every page was a call of its own


def test_memories_added_during_the_read_never_appear_twice(tmp_path) -> None:
    store = LocalStore(tmp_path / "t.db")
    store.add_many([f"m{i}" for i in range(6)], collection="c")

    class Growing:
        def export_page(self, *, cursor=None, limit=50_000):
            page = store.export_page(cursor=cursor, limit=limit)
            store.add("written meanwhile", collection="c")
            store.move(page["memories"]["id"][0].as_py(), collection="c", to_collection="z")
            return page

    keys = read_target_keys(Growing(), page_size=2)
    ids = keys.column("target_id").to_pylist()
    assert len(ids) == len(set(ids)) >= 6


def test_copies_split_across_pages_are_still_copies(tmp_path) -> None:
    """Four copies of one source memory, one per page: verification says duplicated 3 (never
    EXACT), holdings sees 4 copies and keeps the oldest, repair removes the other 3."""
    store = LocalStore(tmp_path / "t.db")
    rows = []
    for i, created in enumerate(["2025-03-01", "2025-01-01", "2025-04-01", "2025-02-01"]):
        rows.append(
            {
                "id": f"copy-{i}",
                "collection": "c",
                "text": "same",
                "metadata": with_marker({}, "a", K, "fp"),
                "created_at": f"{created}T00:00:00Z",
            }
        )
        rows.append({"id": f"filler-{i}", "collection": "c", "text": f"filler {i}"})
    store.seed_dump({"tenant": "t", "collections": [], "memories": rows})
    keys = read_target_keys(store, own_key=K, page_size=2)
    src = source_keys([{"id": "a", "collection": "c", "text": "same"}])
    report = compare(src, keys, migration_id=K, foreign_copies=True)
    assert not report.exact and report.totals["duplicated"] == 3
    assert "EXACT" not in report.render()
    held = which_held([{"source_id": "a", "content": "fp"}], keys, source_key=K).to_pylist()
    assert held[0]["copies"] == 4 and held[0]["target_id"] == "copy-1"  # the oldest
    extras = find_extras(read_target_keys(store, fingerprints=False, page_size=2), K)
    assert sorted(e["target_id"] for e in extras) == ["copy-0", "copy-2", "copy-3"]


def test_local_page_limits_and_cursors(target) -> None:
    from longmem_etl.errors import APIError

    first = target.export_page(limit=5)
    assert first["memories"].num_rows == 5 and first["next"]
    rest = target.export_page(cursor=first["next"], limit=1000)
    assert rest["next"] is None
    assert first["memories"].num_rows + rest["memories"].num_rows == len(_memories())
    for bad in ({"limit": 0}, {"limit": True}, {"cursor": "-1"}, {"cursor": "1e3"}):
        with pytest.raises(APIError) as exc:
            target.export_page(**bad)
        assert exc.value.status == 422


@pytest.mark.parametrize("fingerprints", [True, False])
def test_reconciliation_index_is_the_same_from_pages(target, fingerprints) -> None:
    from longmem_etl.migrate.reconcile import TargetIndex

    old = TargetIndex(target.export_account()["memories"], K, fingerprints=fingerprints)
    new = TargetIndex.from_target(target, K, fingerprints=fingerprints)
    assert new.size == old.size == len(_memories())
    assert {k: sorted(v) for k, v in new.by_source.items()} == {
        k: sorted(v) for k, v in old.by_source.items()
    }
    assert {k: sorted(v) for k, v in new.by_fp.items()} == {
        k: sorted(v) for k, v in old.by_fp.items()
    }
    assert bool(new.by_fp) == fingerprints


def test_pages_are_few_and_sized_by_bytes(target, monkeypatch) -> None:
    """Default paging: the first page asks for FIRST_PAGE_ROWS, each next one for what fits the
    byte budget at the bytes per row seen (clamped); the keys are the same as any fixed size."""
    from longmem_etl.api import pages
    from longmem_etl.migrate import targetread

    assert targetread.page_rows(0, 0) == pages.FIRST_PAGE_ROWS
    assert targetread.page_rows(1_000, 300_000) == min(pages.MAX_PAGE_ROWS, pages.PAGE_BYTES // 300)
    assert targetread.page_rows(1_000, 100_000_000) == 1_000  # long texts: small pages, not 0
    assert targetread.page_rows(10, 10) == pages.MAX_PAGE_ROWS  # tiny rows: capped

    asked: list[int] = []

    class Recording:
        def export_page(self, *, cursor=None, limit=0):
            asked.append(limit)
            return target.export_page(cursor=cursor, limit=limit)

    monkeypatch.setattr(targetread, "FIRST_PAGE_ROWS", 4)
    got = read_target_keys(Recording(), own_key=K)
    assert asked[0] == 4 and asked[1] >= 1_000 and len(asked) == 2
    assert _sorted(got) == _sorted(read_target_keys(target, own_key=K, page_size=3))


def test_keys_without_detail_leave_only_content_and_time_out(target) -> None:
    """``detail=False`` (verification): the same keys, prov_content and created_at NULL, dirty
    rows included."""
    full = _sorted(read_target_keys(target, own_key=K, page_size=4))
    slim = _sorted(read_target_keys(target, own_key=K, page_size=4, detail=False))
    assert len(slim) == len(full) == len(_memories())
    assert any(r["prov_content"] for r in full) and any(r["created_at"] for r in full)
    for a, b in zip(full, slim, strict=True):
        assert b["prov_content"] is None and b["created_at"] is None
        assert {**a, "prov_content": None, "created_at": None} == b


def test_a_reconciliation_looks_up_only_the_markers_it_asks_for(target) -> None:
    """``source_ids``: the index holds exactly those of this source's markers (the same target
    ids as the whole index), none of another source's with the same source id, no fingerprints."""
    from longmem_etl.migrate.reconcile import TargetIndex

    whole = TargetIndex.from_target(target, K, fingerprints=False)
    asked = ["s1", "s4", "absent"]
    some = TargetIndex.from_target(target, K, fingerprints=False, source_ids=asked)
    assert some.size == whole.size and some.keys is not None
    assert {k: sorted(v) for k, v in some.by_source.items()} == {
        k: sorted(whole.by_source[k]) for k in ("s1", "s4")
    }
    assert not some.by_fp
    # fingerprint reconciliation (no markers) still indexes everything
    fps = TargetIndex.from_target(target, K, fingerprints=True, source_ids=asked)
    assert len(fps.by_source) == len(whole.by_source) and fps.by_fp

"""Verification: missing / extra / duplicated, by marker and by fingerprint, and the `verify` verb."""

from __future__ import annotations

from pathlib import Path

from cli_support import run_cli

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.migrate import MigrationOptions, run_migration, verify_source_target
from longmem_etl.migrate.keys import with_marker
from longmem_etl.migrate.verify import compare, source_keys, target_keys

SAMPLE = Path(__file__).resolve().parent.parent / "longmem_etl" / "sample_data" / "acme-small.json"

SRC = [
    {"id": "a", "collection": "c", "text": "alpha"},
    {"id": "b", "collection": "c", "text": "beta", "container_tag": "u1"},
    {"id": "c", "collection": "d", "text": "gamma"},
]


def _t(tid: str, coll: str, text: str, sid: str | None = None, mig: str = "M", tag=None) -> dict:
    meta = with_marker({"x": 1}, sid, mig) if sid else {"x": 1}
    return {"id": tid, "collection": coll, "text": text, "container_tag": tag, "metadata": meta}


def _group(report, coll, tag=None) -> dict:
    return next(g for g in report.groups if g["collection"] == coll and g["container_tag"] == tag)


def test_exact_by_markers_and_by_content() -> None:
    by_marker = [
        _t("1", "c", "alpha", "a"),
        _t("2", "c", "beta", "b", tag="u1"),
        _t("3", "d", "gamma", "c"),
    ]
    r = compare(source_keys(SRC), target_keys(by_marker))
    assert r.exact and r.totals["present"] == 3
    assert sorted(r.id_pairs["target_id"].to_pylist()) == ["1", "2", "3"]
    by_content = [_t("1", "c", " alpha "), _t("2", "c", "beta", tag="u1"), _t("3", "d", "gamma")]
    assert compare(source_keys(SRC), target_keys(by_content)).exact


def test_missing_duplicated_extra_per_collection_and_tag() -> None:
    target = [
        _t("1", "c", "alpha", "a"),
        _t("2", "c", "alpha", "a"),  # a twice: duplicated
        _t("3", "d", "gamma"),  # c by content
        _t("4", "d", "gamma"),  # ... and again: duplicated
        _t("5", "e", "stranger"),  # nothing in the source: extra
        _t("6", "c", "ghost", "zzz"),  # a marker naming no source memory: extra
    ]
    r = compare(source_keys(SRC), target_keys(target))
    assert not r.exact
    t = r.totals
    assert (t["missing"], t["duplicated"], t["extra"], t["present"]) == (1, 2, 2, 2)
    assert _group(r, "c", "u1")["missing"] == 1  # b never arrived
    assert _group(r, "c")["duplicated"] == 1 and _group(r, "d")["duplicated"] == 1
    assert _group(r, "e")["extra"] == 1
    assert "MISMATCH" in r.render()


def test_scoped_to_a_migration_unrelated_memories_are_not_extra() -> None:
    target = [
        _t("1", "c", "alpha", "a"),
        _t("2", "c", "beta", "b", tag="u1"),
        _t("3", "d", "gamma", "c"),
        _t("4", "e", "pre-existing note"),  # was in the target account before
        _t("5", "c", "alpha", "a", mig="OTHER"),  # another migration's copy
    ]
    scoped = compare(source_keys(SRC), target_keys(target), migration_id="M")
    assert scoped.exact and scoped.totals["unrelated"] == 2
    unscoped = compare(source_keys(SRC), target_keys(target))
    assert not unscoped.exact  # plain verify counts everything: a second copy of a, and an extra


def test_verify_verb_exit_codes(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    res = run_migration(
        MigrationOptions(
            source=str(SAMPLE),
            target=f"local:{db}",
            work_root=str(tmp_path / "w"),
            show_progress=False,
        )
    )
    assert res.exit_code == 0
    ok = verify_source_target(str(SAMPLE), f"local:{db}")
    assert ok.exact and ok.totals["present"] == 50
    store = open_endpoint(f"local:{db}")
    victim = store.export_account()["memories"][0]
    store.delete(victim["id"], collection=victim["collection"])
    store.add("an unrelated note", collection="misc")
    bad = run_cli("verify", "--source", str(SAMPLE), "--target", f"local:{db}")
    assert bad.returncode == 3
    assert "missing 1" in bad.stdout and "extra 1" in bad.stdout
    scoped = verify_source_target(str(SAMPLE), f"local:{db}", migration_id=res.source_key)
    assert not scoped.exact and scoped.totals["unrelated"] == 1 and scoped.totals["missing"] == 1
    none = run_cli("verify", "--source", str(SAMPLE), "--target", f"local:{tmp_path / 'x.db'}")
    assert none.returncode == 2 and not (tmp_path / "x.db").exists()

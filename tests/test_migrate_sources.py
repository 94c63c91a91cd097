"""Migrations from every kind of source, with a spec, without provenance, restarted — in-process
through `run_migration` (the CLI is exercised by test_migrate_process.py), against real stores."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from cli_support import run_cli

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.migrate import PROVENANCE_KEY, MigrationOptions, migration_status, run_migration
from longmem_etl.snapshots import convert_dump, open_snapshot

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "longmem_etl" / "sample_data" / "acme-small.json"
SPEC = ROOT / "longmem_etl" / "sample_data" / "specs" / "migration-hygiene.toml"


def _export(db: Path) -> list[dict]:
    return open_endpoint(f"local:{db}", create=False).export_account()["memories"]


def _opts(tmp_path: Path, source: str, target: Path, **kw) -> MigrationOptions:
    return MigrationOptions(
        source=source,
        target=f"local:{target}",
        work_root=str(tmp_path / "work"),
        show_progress=False,
        **kw,
    )


@pytest.mark.parametrize("mode", ["add", "import"])
def test_endpoint_to_endpoint_then_rerun_sends_nothing(tmp_path: Path, mode: str) -> None:
    src = tmp_path / "a.db"
    open_endpoint(f"local:{src}").seed_dump(json.loads(SAMPLE.read_text()))
    res = run_migration(_opts(tmp_path, f"local:{src}", tmp_path / "b.db", mode=mode))
    assert res.exit_code == 0 and res.counts["items_done"] == 50
    assert (
        Path(res.work_dir) / "frozen" / "source"
    ).is_dir()  # the source was frozen as a snapshot
    target = _export(tmp_path / "b.db")
    source = json.loads(SAMPLE.read_text())["memories"]
    assert Counter(m["text"] for m in target) == Counter(m["text"] for m in source)
    assert Counter(m["container_tag"] for m in target) == Counter(
        m["container_tag"] for m in source
    )
    again = run_migration(_opts(tmp_path, f"local:{src}", tmp_path / "b.db", mode=mode))
    # a finished endpoint migration reads the account again (it may have grown) and sends only
    # what the target lacks: here nothing
    assert again.replanned and again.upload["calls"] == 0 and again.exit_code == 0
    assert again.holdings["already_in_target"] == 50
    assert len(_export(tmp_path / "b.db")) == 50


def test_snapshot_source_with_spec_uploads_the_cleaned_rows(tmp_path: Path) -> None:
    snap = convert_dump(SAMPLE, tmp_path / "snaps", progress=False).path
    res = run_migration(_opts(tmp_path, str(snap), tmp_path / "b.db", spec=str(SPEC)))
    cleaned = list(Path(res.work_dir, "frozen", "cleaned").rglob("manifest.json"))
    assert len(cleaned) == 1
    kept = [m for batch in open_snapshot(cleaned[0].parent).iter_dump_memories() for m in batch]
    assert res.exit_code == 0 and res.counts["items_total"] == len(kept) < 50
    assert sorted(m["text"] for m in _export(tmp_path / "b.db")) == sorted(m["text"] for m in kept)
    # the id map says where every source memory went
    import pyarrow.parquet as pq

    idmap = pq.read_table(res.outputs["id_map"]).to_pylist()
    assert {r["source_id"] for r in idmap} == {m["id"] for m in kept}
    assert {r["target_id"] for r in idmap} == {m["id"] for m in _export(tmp_path / "b.db")}


@pytest.mark.parametrize("mode", ["add", "import"])
def test_the_id_map_holds_every_target_id_whoever_learnt_it(tmp_path: Path, mode: str) -> None:
    """The id map is written while verification reads the target, from the journal's ids: an
    add learns every id from its calls; an import learns none (``import_memories`` answers
    counts), so verification finds them through the markers and the map is written again."""
    import pyarrow.parquet as pq

    res = run_migration(_opts(tmp_path, str(SAMPLE), tmp_path / "b.db", mode=mode))
    assert res.exit_code == 0
    idmap = pq.read_table(res.outputs["id_map"]).to_pylist()
    source = json.loads(SAMPLE.read_text())["memories"]
    assert sorted(r["source_id"] for r in idmap) == sorted(m["id"] for m in source)
    by_marker = {
        m["metadata"][PROVENANCE_KEY]["source_id"]: m["id"] for m in _export(tmp_path / "b.db")
    }
    assert {r["source_id"]: r["target_id"] for r in idmap} == by_marker


def test_no_provenance_adds_no_marker_and_still_verifies(tmp_path: Path) -> None:
    dump = json.loads(SAMPLE.read_text())
    objects = [
        m for m in dump["memories"] if m["metadata"] is None or isinstance(m["metadata"], dict)
    ]
    assert 0 < len(objects) < 50
    (tmp_path / "d.json").write_text(json.dumps({**dump, "memories": objects}))
    res = run_migration(
        _opts(tmp_path, str(tmp_path / "d.json"), tmp_path / "b.db", provenance=False)
    )
    assert res.exit_code == 0 and res.verification["exact"]
    target = _export(tmp_path / "b.db")
    assert len(target) == len(objects)
    assert not any(PROVENANCE_KEY in (m["metadata"] or {}) for m in target)


def test_no_provenance_sends_items_as_they_are_so_the_server_may_refuse_some(
    tmp_path: Path,
) -> None:
    # Without a marker, non-object metadata (lists, strings, numbers) is sent unchanged and the
    # store answers 422 for exactly those items (with a marker it is kept under
    # "_original_metadata" instead).
    res = run_migration(_opts(tmp_path, str(SAMPLE), tmp_path / "b.db", provenance=False))
    lists = {
        m["id"]
        for m in json.loads(SAMPLE.read_text())["memories"]
        if not (m["metadata"] is None or isinstance(m["metadata"], dict))
    }
    dead = [json.loads(x) for x in Path(res.outputs["dead_letter"]).read_text().splitlines()]
    assert res.exit_code == 3 and {d["source_id"] for d in dead} == lists
    assert all(d["status"] == 422 and "metadata" in d["message"] for d in dead)
    assert res.verification["totals"]["missing"] == len(lists)
    assert res.verification["totals"]["duplicated"] == 0


def test_restart_recognises_what_already_landed(tmp_path: Path) -> None:
    first = run_migration(_opts(tmp_path, str(SAMPLE), tmp_path / "b.db"))
    assert first.exit_code == 0
    again = run_migration(_opts(tmp_path, str(SAMPLE), tmp_path / "b.db", restart=True))
    assert (
        not again.resumed
        and again.replanned == "--restart"
        and again.holdings["already_in_target"] == 50
        and again.upload["calls"] == 0
    )
    assert again.exit_code == 0 and len(_export(tmp_path / "b.db")) == 50


def test_status_reports_progress_and_verification(tmp_path: Path) -> None:
    res = run_migration(_opts(tmp_path, str(SAMPLE), tmp_path / "b.db"))
    st = migration_status(res.journal)
    assert st["items_done"] == 50 and st["chunks"]["done"] == st["chunks_total"]
    assert st["verification"]["exact"] is True
    assert "LONGMEM" not in json.dumps(st["binding"]) or "key_fingerprint" in json.dumps(
        st["binding"]
    )
    proc = run_cli("status", res.work_dir)
    assert proc.returncode == 0 and "50/50 done" in proc.stdout
    bad = run_cli("status", str(tmp_path / "nope.sqlite"))
    assert bad.returncode == 2 and "no journal" in bad.stderr


def test_bad_source_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"memories": [')
    with pytest.raises(Exception) as exc:
        run_migration(_opts(tmp_path, str(bad), tmp_path / "b.db"))
    assert getattr(exc.value, "exit_code", None) == 2
    assert not any((tmp_path / "work").rglob("*")) and not (tmp_path / "b.db").exists()


def test_source_and_target_the_same_account_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    open_endpoint(f"local:{db}").seed_dump(json.loads(SAMPLE.read_text()))
    proc = run_cli("migrate", "--source", f"local:{db}", "--target", f"local:{db}?latency_ms=1")
    assert proc.returncode == 2 and "same account" in proc.stderr

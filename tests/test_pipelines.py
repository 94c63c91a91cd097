"""In-process materializations of every pipelines asset and check, on embedded tenants in tmp dirs.

Real components throughout: seeded ``local:`` SQLite tenants, real snapshots, DuckDB, the real
migration engine and an ephemeral Dagster instance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetSelection, DagsterInstance, materialize

from pipelines.analysis.assets import memories_clean, warehouse
from pipelines.backup.assets import account_dump, memories_snapshot
from pipelines.definitions import ASSETS, CHECKS
from pipelines.migration.assets import tenant_migration
from pipelines.partitions import register_tenants
from pipelines.resources import default_resources
from pipelines.utils import latest_metadata

SECRET = "sk-live-pipelines-test-do-not-leak"


@pytest.fixture
def env(etl_state, tmp_path, monkeypatch):
    """State in a tmp dir, no deployment env vars, a key in the environment that must never leak."""

    state = etl_state
    monkeypatch.setenv("LONGMEM_API_KEY", SECRET)
    instance = DagsterInstance.ephemeral()
    register_tenants(instance)  # the sample tenants: acme, globex
    return state, instance


def _run(instance, partition, assets, checks=(), selection=None, run_config=None):
    result = materialize(
        [*assets, *checks],
        selection=selection,
        partition_key=partition,
        resources=default_resources(),
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
    )
    evals = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }
    return result, evals


def _meta(instance, asset, partition):
    return latest_metadata(instance, asset.key, partition)


def _plain(value):
    """Metadata as JSON-able values (a table's records are tuples json cannot iterate)."""
    records = getattr(value, "records", None)
    return [r.data for r in records] if records is not None else value


def _all_metadata_text(instance, partition) -> str:
    return json.dumps(
        {
            a.key.to_user_string(): {k: _plain(v) for k, v in _meta(instance, a, partition).items()}
            for a in ASSETS
        },
        default=str,
    )


def test_acme_whole_graph_materializes_with_all_checks_passing(env):
    state, instance = env
    result, evals = _run(instance, "acme", ASSETS, CHECKS)
    assert result.success
    assert len(evals) == len(CHECKS) and all(evals.values()), evals

    snap = _meta(instance, memories_snapshot, "acme")
    assert snap["memories"] == 2000 and snap["rejected"] == 0 and snap["collections"] == 6
    assert Path(snap["snapshot_path"]).parent.parent == state / "snapshots"
    assert "| collection | memories |" in snap["per_collection"]
    assert snap["source"] == f"local:{state / 'tenants' / 'acme.sqlite'}"
    assert (state / "tenants" / "acme.sqlite").is_file()  # seeded from sample_data on first use

    dump = _meta(instance, account_dump, "acme")
    assert dump["memories"] == 2000 and dump["bytes"] > 0
    assert Path(dump["dump_path"]).is_file() and dump["dump_path"].endswith(".json.zst")

    clean = _meta(instance, memories_clean, "acme")
    assert clean["rows_in"] == 2000 == clean["rows_out"] + clean["removed"]
    assert Path(clean["snapshot_path"]).is_relative_to(state / "clean")

    wh = _meta(instance, warehouse, "acme")
    assert Path(wh["database"]) == state / "warehouse" / "acme.duckdb"
    assert "memories" in wh["views"]

    mig = _meta(instance, tenant_migration, "acme")
    assert mig["verified_exact"] is True and mig["dead_letters"] == 0
    assert mig["items_done"] == mig["items_total"] == 2000
    assert mig["resumed"] is False
    assert SECRET not in _all_metadata_text(instance, "acme")


def test_migration_rerun_resumes_its_journal_and_sends_nothing_twice(env):
    from longmem_etl.api.endpoints import open_endpoint

    state, instance = env
    assert _run(instance, "acme", [memories_snapshot])[0].success
    first, _ = _run(instance, "acme", [tenant_migration])
    assert first.success
    journal = _meta(instance, tenant_migration, "acme")["journal"]

    again, evals = _run(instance, "acme", [tenant_migration], CHECKS[-1:])
    assert again.success and evals == {("tenant_migration", "migration_verified_exact"): True}
    meta = _meta(instance, tenant_migration, "acme")
    assert meta["resumed"] is True and meta["journal"] == journal
    store = open_endpoint(f"local:{state / 'targets' / 'acme.sqlite'}", create=False)
    try:
        assert store.count() == 2000  # nothing re-sent
    finally:
        store.close()


def test_dirty_tenant_clean_accounts_for_every_row(env):
    state, instance = env
    result, evals = _run(instance, "globex", [memories_snapshot, memories_clean], CHECKS)
    assert result.success
    clean_checks = {k: v for k, v in evals.items() if k[0] == "memories_clean"}
    assert clean_checks and all(clean_checks.values()), evals
    clean = _meta(instance, memories_clean, "globex")
    assert clean["removed"] > 0
    assert clean["rows_in"] == clean["rows_out"] + clean["removed"] == 1000
    assert "| # | step | kind |" in clean["steps"]


def test_blocking_snapshot_checks_fail_on_a_tampered_snapshot_and_stop_downstream(env):
    state, instance = env
    assert _run(instance, "acme", [memories_snapshot])[0].success
    snap = Path(_meta(instance, memories_snapshot, "acme")["snapshot_path"])
    table = pq.read_table(snap / "memories.parquet")
    pq.write_table(pa.concat_tables([table, table.slice(0, 3)]), snap / "memories.parquet")

    # run the snapshot's checks (not the asset) together with its downstream account_dump
    selection = AssetSelection.assets(account_dump) | AssetSelection.checks_for_assets(
        memories_snapshot
    )
    result, evals = _run(
        instance, "acme", [memories_snapshot, account_dump], CHECKS, selection=selection
    )
    assert evals == {
        ("memories_snapshot", "ids_unique"): False,
        ("memories_snapshot", "manifest_counts_match"): False,
        ("memories_snapshot", "schema_matches"): True,
        # the per-tenant health checks see it too (the tenant's only snapshot is not intact)
        ("memories_snapshot", "tenant_snapshots_intact"): False,
        ("memories_snapshot", "tenant_fresh"): False,
    }
    assert not result.success
    assert result.asset_materializations_for_node("account_dump") == []  # blocked
    assert not (state / "dumps" / "tenant=acme" / f"{snap.name}.json.zst").exists()


def test_unknown_tenant_without_store_or_sample_fails_and_writes_nothing(env):
    state, instance = env
    register_tenants(instance, ["initech"])
    result, _ = _run(instance, "initech", [memories_snapshot])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "no such local store" in failure.step_failure_data.error.to_string()
    assert not (state / "tenants" / "initech.sqlite").exists()
    assert not list((state / "snapshots").glob("tenant=initech/snapshot=*"))


def test_retention_keeps_the_newest_snapshots_and_their_dumps(env):
    state, instance = env
    register_tenants(instance, ["acme-small"])
    config = {"ops": {"memories_snapshot": {"config": {"keep": 2}}}}
    for _ in range(3):
        result, evals = _run(
            instance,
            "acme-small",
            [memories_snapshot, account_dump],
            CHECKS[:4],
            run_config=config,
        )
        assert result.success and all(evals.values())
    snaps = sorted(p.name for p in (state / "snapshots" / "tenant=acme-small").glob("snapshot=*"))
    dumps = sorted(p.name for p in (state / "dumps" / "tenant=acme-small").glob("*.json.zst"))
    assert len(snaps) == 2 and dumps == [f"{s}.json.zst" for s in snaps]
    meta = _meta(instance, memories_snapshot, "acme-small")
    assert meta["pruned"] == 1 and meta["keep"] == 2
    assert _meta(instance, account_dump, "acme-small")["dumps_removed"] == 1

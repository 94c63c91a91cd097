"""The ``iceberg_tables`` asset: after a backup and a clean, both snapshots appended to Iceberg
(backup tables and ``_clean`` tables), re-materializing appends nothing, metadata holds no secret."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, materialize

from longmem_etl.lakehouse.catalog import open_catalog
from longmem_etl.snapshots import list_snapshots
from longmem_etl.snapshots.reader import open_snapshot
from pipelines.analysis.assets import memories_clean
from pipelines.backup.assets import memories_snapshot
from pipelines.lakehouse.assets import iceberg_tables
from pipelines.partitions import register_tenants
from pipelines.resources import default_resources
from pipelines.utils import latest_metadata

SECRET = "sk-live-iceberg-test-do-not-leak"


@pytest.fixture
def env(etl_state, tmp_path, monkeypatch):

    state = etl_state
    monkeypatch.setenv("LONGMEM_API_KEY", SECRET)
    instance = DagsterInstance.ephemeral()
    register_tenants(instance)
    return state, instance


def _materialize(instance, assets, selection=None):
    result = materialize(
        assets,
        selection=selection,
        partition_key="acme",
        resources=default_resources(),
        instance=instance,
    )
    assert result.success
    return latest_metadata(instance, iceberg_tables.key, "acme")


def test_iceberg_tables_publishes_backup_and_clean_once(env):
    state, instance = env
    meta = _materialize(instance, [memories_snapshot, memories_clean, iceberg_tables])
    assert meta["appended_snapshots"] == 2  # the backup and the cleaned snapshot
    cat = open_catalog(
        f"sqlite:///{state}/iceberg/catalog.db", str(state / "iceberg" / "warehouse")
    )
    for ns, root in (("longmem", state / "snapshots"), ("longmem_clean", state / "clean")):
        (snap,) = list_snapshots(root, "acme")
        want = open_snapshot(snap).counts
        for table in ("memories", "collections", "rejected"):
            t = cat.load_table(f"{ns}.{table}")
            assert len(t.snapshots()) == 1
            assert t.scan().to_arrow().num_rows == want.get(table, 0), (ns, table)
    rows = meta["rows_appended"]
    assert (
        rows["longmem.memories"]
        == open_snapshot(list_snapshots(state / "snapshots")[0]).counts["memories"]
    )
    assert rows["longmem_clean.rejected"] > 0  # the sample spec removes rows from acme

    # again (e.g. a retry or the eager condition firing twice): nothing appended
    meta = _materialize(instance, [memories_snapshot, memories_clean, iceberg_tables],
                        selection=[iceberg_tables])  # fmt: skip
    assert meta["appended_snapshots"] == 0
    assert len(cat.load_table("longmem.memories").snapshots()) == 1
    text = json.dumps({k: str(v) for k, v in meta.items()})
    assert SECRET not in text


def test_a_backup_alone_requests_iceberg_tables_for_its_tenant(env):
    """The automation condition fires after a backup even if the tenant was never cleaned."""
    from dagster import Definitions, evaluate_automation_conditions

    _, instance = env
    assets = Definitions(
        assets=[memories_snapshot, memories_clean, iceberg_tables], resources=default_resources()
    )
    result = evaluate_automation_conditions(defs=assets, instance=instance)
    assert result.total_requested == 0  # nothing materialized yet: nothing to publish
    materialize([memories_snapshot], partition_key="acme", resources=default_resources(),
                instance=instance)  # fmt: skip
    result = evaluate_automation_conditions(defs=assets, instance=instance, cursor=result.cursor)
    assert result.get_requested_partitions(iceberg_tables.key) == {"acme"}

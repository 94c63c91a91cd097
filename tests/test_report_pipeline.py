"""The ``memories_report`` Dagster asset: a real materialization after snapshot, clean and migrate."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from pipelines.analysis.assets import memories_clean
from pipelines.analysis.report import memories_report
from pipelines.backup.assets import memories_snapshot
from pipelines.migration.assets import tenant_migration
from pipelines.partitions import register_tenants
from pipelines.resources import default_resources
from pipelines.utils import latest_metadata


@pytest.fixture
def env(etl_state, tmp_path, monkeypatch):
    state = etl_state
    instance = DagsterInstance.ephemeral()
    register_tenants(instance)
    return state, instance


def _records(meta, name: str) -> list[dict]:
    return [r.data for r in meta[name].records]


def test_memories_report_after_clean_and_migration_has_tables_and_the_html(env):
    state, instance = env
    upstream = materialize(
        [memories_snapshot, memories_clean, tenant_migration],
        partition_key="globex",
        resources=default_resources(),
        instance=instance,
    )
    assert upstream.success
    result = materialize(
        [memories_snapshot, memories_clean, tenant_migration, memories_report],
        selection=[memories_report],
        partition_key="globex",
        resources=default_resources(),
        instance=instance,
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("memories_report")
    meta = mat.metadata
    path = Path(meta["report_path"].value)
    assert path == state / "reports" / "globex.html"
    html = path.read_text(encoding="utf-8")
    assert html.count('<figure class="chart"') == 10 and "http" not in html.lower()

    clean = latest_metadata(instance, "memories_clean", "globex")
    (overview,) = _records(meta, "overview")
    assert overview["memories"] == clean["rows_out"] == meta["memories"].value
    assert Path(meta["snapshot_path"].value) == Path(clean["snapshot_path"])
    rejected = _records(meta, "rejected")
    assert sum(r["rows"] for r in rejected) == clean["removed"]  # the backup rejected nothing
    assert {r["stage"] for r in rejected} >= {"dedup", "drop_archived"}
    (migration,) = _records(meta, "migrations")  # the migration started from the backup root
    mig = latest_metadata(instance, "tenant_migration", "globex")
    assert migration["exact"] is True is mig["verified_exact"]
    assert migration["source"] == mig["items_total"]
    assert {c.name for c in meta["duplicates"].schema.columns} >= {
        "collection",
        "normalised_duplicates",
    }

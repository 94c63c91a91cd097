"""Dagster: the per-tenant integrity check and freshness alarm, run with the backup asset and
reported hourly (without a run) by the ``snapshot_health`` sensor, on real snapshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetCheckKey, DagsterInstance, materialize

from pipelines.backup.assets import memories_snapshot
from pipelines.backup.checks import tenant_checks
from pipelines.backup.schedules import health_job
from pipelines.partitions import register_tenants
from pipelines.resources import default_resources
from pipelines.utils import latest_metadata


@pytest.fixture
def instance(etl_state, tmp_path, monkeypatch):
    (tmp_path / "dagster").mkdir()
    inst = DagsterInstance.local_temp(str(tmp_path / "dagster"))
    register_tenants(inst)  # acme, globex
    return inst


def _sensor(instance) -> dict[tuple[str, str], bool]:
    """One snapshot_health run per tenant (as the hourly schedule asks); the latest evaluation of
    each tenant_* check, per tenant partition."""
    for tenant in ("acme", "globex"):
        assert health_job.execute_in_process(
            run_config={"ops": {"tenant_health_op": {"config": {"tenant": tenant}}}},
            resources=default_resources(),
            instance=instance,
        ).success
    out = {}
    for name in ("tenant_snapshots_intact", "tenant_fresh"):
        key = AssetCheckKey(memories_snapshot.key, name)
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=10):
            ev = record.event.dagster_event.event_specific_data  # AssetCheckEvaluation
            out.setdefault((ev.partition, name), ev.passed)  # newest first
    return out


def test_checks_run_with_the_asset(instance) -> None:
    result = materialize(
        [memories_snapshot, *tenant_checks],
        partition_key="acme",
        resources=default_resources(),
        instance=instance,
    )
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals == {"tenant_snapshots_intact": True, "tenant_fresh": True}


def test_health_job_raises_the_alarm_per_tenant(instance, monkeypatch) -> None:
    assert materialize(
        [memories_snapshot], partition_key="acme", resources=default_resources(), instance=instance
    ).success
    # acme has an intact fresh snapshot; globex was never backed up
    assert _sensor(instance) == {
        ("acme", "tenant_snapshots_intact"): True,
        ("acme", "tenant_fresh"): True,
        ("globex", "tenant_snapshots_intact"): False,
        ("globex", "tenant_fresh"): False,
    }
    monkeypatch.setenv("LONGMEM_ETL_MAX_AGE", "0s")  # every snapshot is now too old
    assert _sensor(instance)[("acme", "tenant_fresh")] is False
    monkeypatch.delenv("LONGMEM_ETL_MAX_AGE")
    snap = Path(latest_metadata(instance, memories_snapshot.key, "acme")["snapshot_path"])
    manifest = (snap / "manifest.json").read_bytes()
    (snap / "manifest.json").write_bytes(manifest.replace(b'"acme"', b'"evil"', 1))
    seen = _sensor(instance)
    assert seen[("acme", "tenant_snapshots_intact")] is False
    assert seen[("acme", "tenant_fresh")] is False  # no intact snapshot left


def test_health_schedule_asks_one_run_per_tenant(instance) -> None:
    from datetime import datetime, timezone

    from dagster import build_schedule_context

    from pipelines.backup.schedules import snapshot_health

    when = datetime(2026, 1, 2, 3, 15, tzinfo=timezone.utc)
    requests = snapshot_health(
        build_schedule_context(instance=instance, scheduled_execution_time=when)
    )
    assert sorted(r.run_key for r in requests) == [
        "health-acme-2026-01-02T03",
        "health-globex-2026-01-02T03",
    ]

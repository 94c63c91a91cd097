"""Schedules, sensors, partitions and resource configuration of ``pipelines`` (no runs launched)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    EnvVar,
    RunRequest,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from pipelines import defs
from pipelines.backup.schedules import daily_backup
from pipelines.backup.sensors import tenant_registry
from pipelines.migration.sensors import migrate_after_backup
from pipelines.partitions import default_tenants, register_tenants
from pipelines.resources import LongmemEndpoint, default_resources, safe_uri


def test_defs_expose_the_graph_jobs_schedule_and_sensors():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {
        "memories_snapshot",
        "account_dump",
        "memories_clean",
        "warehouse",
        "memories_report",
        "tenant_migration",
        "iceberg_tables",
    }
    assert {j.name for j in repo.get_all_jobs()} >= {"daily_backup_job", "tenant_migration_job"}
    assert daily_backup.default_status == DefaultScheduleStatus.RUNNING
    assert migrate_after_backup.default_status == DefaultSensorStatus.STOPPED
    assert tenant_registry.default_status == DefaultSensorStatus.RUNNING
    publisher = repo.get_sensor_def("publish_after_backup_or_clean")
    assert publisher.default_status == DefaultSensorStatus.RUNNING
    iceberg = repo.assets_defs_by_key[AssetKey("iceberg_tables")]
    assert iceberg.automation_conditions_by_key[AssetKey("iceberg_tables")] is not None


def test_tenant_registry_adds_configured_tenants_once(monkeypatch):
    monkeypatch.setenv("LONGMEM_ETL_TENANTS", "acme, initech,acme")
    assert default_tenants() == ["acme", "initech"]
    instance = DagsterInstance.ephemeral()
    result = tenant_registry(build_sensor_context(instance=instance))
    assert isinstance(result, SensorResult)
    (request,) = result.dynamic_partitions_requests
    assert request.partitions_def_name == "tenants"
    assert sorted(request.partition_keys) == ["acme", "initech"]
    instance.add_dynamic_partitions("tenants", list(request.partition_keys))
    assert isinstance(tenant_registry(build_sensor_context(instance=instance)), SkipReason)


def test_sample_tenants_are_the_default(monkeypatch):
    monkeypatch.delenv("LONGMEM_ETL_TENANTS", raising=False)
    assert default_tenants() == ["acme", "globex"]


def test_daily_backup_requests_one_run_per_tenant_with_retention(monkeypatch, tmp_path):
    monkeypatch.setenv("LONGMEM_ETL_KEEP", "3")
    instance = DagsterInstance.local_temp(str(tmp_path))
    assert isinstance(
        daily_backup(build_schedule_context(instance=instance)), SkipReason
    )  # nothing registered yet
    register_tenants(instance, ["acme", "globex"])
    when = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)
    requests = daily_backup(
        build_schedule_context(instance=instance, scheduled_execution_time=when)
    )
    assert all(isinstance(r, RunRequest) for r in requests)
    assert sorted(r.partition_key for r in requests) == ["acme", "globex"]
    assert {r.run_key for r in requests} == {"backup-acme-2026-11-25", "backup-globex-2026-11-25"}
    for r in requests:
        assert r.run_config == {"ops": {"memories_snapshot": {"config": {"keep": 3}}}}


def test_resources_bind_env_vars_by_name_when_set(monkeypatch):
    monkeypatch.setenv("LONGMEM_ETL_SOURCE_URI", "https://rememberos.ai")
    monkeypatch.setenv("LONGMEM_ETL_SOURCE_KEY_ENV", "ACME_LONGMEM_KEY")
    monkeypatch.delenv("LONGMEM_ETL_TARGET_URI", raising=False)
    res = default_resources()
    assert res["source"].uri_template == EnvVar("LONGMEM_ETL_SOURCE_URI")
    assert res["source"].key_env_var == EnvVar("LONGMEM_ETL_SOURCE_KEY_ENV")
    assert res["target"].uri_template == "local:{home}/targets/{tenant}.sqlite"


def test_endpoint_templates_and_key_env_names(monkeypatch, tmp_path):
    monkeypatch.setenv("LONGMEM_ETL_HOME", str(tmp_path))
    ep = LongmemEndpoint(key_env_var="LONGMEM_KEY_{tenant}")
    assert ep.uri("acme") == f"local:{tmp_path}/tenants/acme.sqlite"
    assert ep.key_env("globex-eu") == "LONGMEM_KEY_GLOBEX_EU"


def test_safe_uri_drops_credentials_and_secret_parameters():
    assert safe_uri("https://user:pw@rememberos.ai/v1?api_key=sk-1&region=eu") == (
        "https://rememberos.ai/v1?region=eu"
    )
    assert safe_uri("local:/x/t.sqlite?latency_ms=5&token=abc") == "local:/x/t.sqlite?latency_ms=5"


def test_migrate_after_backup_requests_a_migration_per_new_backup(monkeypatch, tmp_path):
    from dagster import materialize

    from pipelines.backup.assets import memories_snapshot

    monkeypatch.setenv("LONGMEM_ETL_HOME", str(tmp_path / "state"))
    instance = DagsterInstance.local_temp(str(tmp_path))
    register_tenants(instance, ["acme-small"])
    context = build_sensor_context(instance=instance, definitions=defs)

    def requests():
        return [r for r in migrate_after_backup(context) or [] if isinstance(r, RunRequest)]

    assert requests() == []  # no backup yet
    run = materialize(
        [memories_snapshot],
        partition_key="acme-small",
        resources=default_resources(),
        instance=instance,
    )
    (request,) = requests()
    assert request.partition_key == "acme-small"
    assert request.run_key == f"migrate-acme-small-{run.run_id}"
    assert requests() == []  # the cursor moved on


def test_tenant_names_cannot_escape_their_directories(monkeypatch, tmp_path):
    monkeypatch.setenv("LONGMEM_ETL_HOME", str(tmp_path))
    ep = LongmemEndpoint()
    path = Path(ep.uri("../../etc/x")[len("local:") :])
    assert path.parent == tmp_path / "tenants" and path.name == "..%2F..%2Fetc%2Fx.sqlite"
    # and distinct names stay distinct (the old sanitising mapped both of these to a_b)
    assert ep.uri("a/b") != ep.uri("a_b")

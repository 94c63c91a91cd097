"""The Dagster migration asset queues: it sits in a concurrency pool, the sensor tags runs per
tenant, and the engine's OS lock is the backstop — a run of a tenant whose migration is held by
another process refuses (wait: false) naming the holder, and after it the same asset finds the
journal in the shared state home and sends nothing twice."""

from __future__ import annotations

import os

from dagster import DagsterInstance, materialize
from pipelines_support import isolated_env

from pipelines.migration.assets import tenant_migration
from pipelines.migration.sensors import migration_job
from pipelines.partitions import register_tenants
from pipelines.resources import default_resources
from pipelines.utils import latest_metadata

TENANT = "acme-small"


def test_pool_and_lock_queue_a_tenants_migrations(tmp_path, monkeypatch):
    from pipelines.backup.assets import memories_snapshot

    assert tenant_migration.op.pool == "longmem_migration"
    assert migration_job is not None
    env = isolated_env(tmp_path)
    for k in ("DAGSTER_HOME", "LONGMEM_ETL_HOME"):
        monkeypatch.setenv(k, env[k])
    instance = DagsterInstance.get()
    register_tenants(instance, [TENANT])
    res = default_resources()
    assert materialize(
        [memories_snapshot], partition_key=TENANT, resources=res, instance=instance
    ).success
    assert materialize(
        [tenant_migration], partition_key=TENANT, resources=res, instance=instance
    ).success
    meta = latest_metadata(instance, tenant_migration.key, TENANT)
    assert meta["verified_exact"] is True and meta["items_done"] == 50

    from longmem_etl.migrate.lock import run_lock
    from longmem_etl.migrate.state import locks_dir

    config = {"ops": {"tenant_migration": {"config": {"wait": False}}}}
    lock = locks_dir() / f"{meta['migration_id']}.lock"
    with run_lock(lock, what="a test holding the migration"):
        held = materialize(
            [tenant_migration],
            partition_key=TENANT,
            resources=res,
            instance=instance,
            run_config=config,
            raise_on_error=False,
        )
    assert not held.success
    failure = next(e for e in held.all_events if e.is_step_failure)
    assert f"pid {os.getpid()}" in str(failure.step_failure_data.error)
    # a newer backup: new snapshot, same migration; the target's markers say all 50 are there
    assert materialize(
        [memories_snapshot], partition_key=TENANT, resources=res, instance=instance
    ).success
    assert materialize(
        [tenant_migration], partition_key=TENANT, resources=res, instance=instance
    ).success
    again = latest_metadata(instance, tenant_migration.key, TENANT)
    assert again["migration_id"] == meta["migration_id"] and again["verified_exact"] is True
    assert again["already_in_target"] == 50

"""``migrate_after_backup``: migrate a tenant each time its backup lands. OFF by default.

A migration writes to another account, so it never starts on its own: turn this sensor on in the UI
(or ``dagster sensor start migrate_after_backup``) once the target and run config are right. Each new
``memories_snapshot`` materialization requests one ``tenant_migration_job`` run for that tenant; the
run key is the backup run's id, so a tick never launches the same migration twice.
"""

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    EventLogEntry,
    RunRequest,
    SensorEvaluationContext,
    asset_sensor,
    define_asset_job,
)

from pipelines.backup.assets import memories_snapshot
from pipelines.migration.assets import tenant_migration

migration_job = define_asset_job(
    "tenant_migration_job",
    selection=AssetSelection.assets(tenant_migration),
    description="Migrate one tenant (run config: target_uri, mode, spec, concurrency, restart).",
)


@asset_sensor(
    name="migrate_after_backup",
    asset_key=memories_snapshot.key,
    job=migration_job,
    default_status=DefaultSensorStatus.STOPPED,
    description="Migrate a tenant after each new backup snapshot (off by default).",
)
def migrate_after_backup(context: SensorEvaluationContext, asset_event: EventLogEntry):
    event = asset_event.dagster_event
    tenant = event.partition if event is not None else None
    if tenant is None:
        return
    yield RunRequest(
        run_key=f"migrate-{tenant}-{asset_event.run_id}",
        partition_key=tenant,
        # per-tenant queueing: tag_concurrency_limits on longmem-etl/migration (applyLimitPerUniqueValue)
        tags={"longmem-etl/tenant": tenant, "longmem-etl/migration": tenant},
    )

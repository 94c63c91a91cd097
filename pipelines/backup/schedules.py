"""The daily backup: one run per registered tenant, with retention.

Runs at 02:00 UTC (``$LONGMEM_ETL_BACKUP_CRON`` to change) while the daemon (or ``dagster dev``)
runs. Each run request carries the tenant partition and the retention ``keep``
(``$LONGMEM_ETL_KEEP``, default 7 snapshots per tenant); the run key makes a tick idempotent.
"""

import os

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)

from pipelines.backup.assets import account_dump, memories_snapshot
from pipelines.partitions import tenants_partitions

BACKUP_CRON = os.environ.get("LONGMEM_ETL_BACKUP_CRON", "0 2 * * *")

backup_job = define_asset_job(
    "daily_backup_job",
    selection=[memories_snapshot, account_dump],
    description="memories_snapshot (+ its checks and retention) -> account_dump, for one tenant",
)


def default_keep() -> int:
    return int(os.environ.get("LONGMEM_ETL_KEEP", "7"))


def backup_run_config(keep: int) -> dict:
    return {"ops": {"memories_snapshot": {"config": {"keep": keep}}}}


@schedule(
    name="daily_backup",
    job=backup_job,
    cron_schedule=BACKUP_CRON,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Back up every registered tenant once a day, keeping the newest N snapshots.",
)
def daily_backup(context: ScheduleEvaluationContext):
    tenants = tenants_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    if not tenants:
        return SkipReason("no tenants registered yet (see the tenant_registry sensor)")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    keep = default_keep()
    return [
        RunRequest(
            run_key=f"backup-{tenant}-{day}",
            partition_key=tenant,
            run_config=backup_run_config(keep),
            tags={"longmem-etl/tenant": tenant},
        )
        for tenant in tenants
    ]

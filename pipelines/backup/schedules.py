"""The daily backup: one run per registered tenant, then ``forget`` by a retention policy.

Runs at 02:00 UTC (``$LONGMEM_ETL_BACKUP_CRON`` to change) while the daemon (or ``dagster dev``)
runs. Each run request carries the tenant partition and the retention policy: ``$LONGMEM_ETL_RETENTION``
(restic-style rules, e.g. ``daily=7,weekly=4,monthly=12`` or ``last=3,within=30d``), else
``$LONGMEM_ETL_KEEP`` (keep-last, default 7). The run key makes a tick idempotent.
"""

import os

from dagster import (
    AssetCheckEvaluation,
    Config,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    job,
    op,
    schedule,
)

from pipelines.backup.assets import account_dump, memories_snapshot
from pipelines.partitions import tenants_partitions
from pipelines.resources import SnapshotRoot

BACKUP_CRON = os.environ.get("LONGMEM_ETL_BACKUP_CRON", "0 2 * * *")

backup_job = define_asset_job(
    "daily_backup_job",
    selection=[memories_snapshot, account_dump],
    description="memories_snapshot (+ its checks and retention) -> account_dump, for one tenant",
)


def default_keep() -> int:
    return int(os.environ.get("LONGMEM_ETL_KEEP", "7"))


def default_policy():
    """The schedule's retention: ``$LONGMEM_ETL_RETENTION``, else keep-last ``$LONGMEM_ETL_KEEP``."""
    from longmem_etl.retention import Policy, parse_policy

    text = os.environ.get("LONGMEM_ETL_RETENTION", "").strip()
    return parse_policy(text) if text else Policy(last=default_keep())


def backup_run_config(policy) -> dict:
    """Run config for ``memories_snapshot`` carrying a retention policy (or a keep-last count)."""
    from longmem_etl.retention import Policy

    if isinstance(policy, int):
        policy = Policy(last=policy)
    config: dict = {"keep": policy.last}
    for name in ("hourly", "daily", "weekly", "monthly", "yearly"):
        if getattr(policy, name):
            config[f"keep_{name}"] = getattr(policy, name)
    if policy.within is not None and not policy.within.zero:
        config["keep_within"] = str(policy.within)
    return {"ops": {"memories_snapshot": {"config": config}}}


@schedule(
    name="daily_backup",
    job=backup_job,
    cron_schedule=BACKUP_CRON,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Back up every registered tenant once a day, then forget by the retention policy.",
)
def daily_backup(context: ScheduleEvaluationContext):
    tenants = tenants_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    if not tenants:
        return SkipReason("no tenants registered yet (see the tenant_registry sensor)")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    config = backup_run_config(default_policy())
    return [
        RunRequest(
            run_key=f"backup-{tenant}-{day}",
            partition_key=tenant,
            run_config=config,
            tags={"longmem-etl/tenant": tenant},
        )
        for tenant in tenants
    ]


class HealthConfig(Config):
    tenant: str


@op(
    description="tenant_snapshots_intact + tenant_fresh for one tenant, reported on memories_snapshot"
)
def tenant_health_op(
    context: OpExecutionContext, config: HealthConfig, snapshot_root: SnapshotRoot
):
    from pipelines.partitions import tenant_of
    from pipelines.snapshot_checks import tenant_health

    with snapshot_root.staged(tenant_of(config.tenant)) as (root, _):
        results = tenant_health(root, config.tenant)
    for name, (passed, metadata) in results.items():
        context.log_event(
            AssetCheckEvaluation(
                asset_key=memories_snapshot.key,
                check_name=name,
                passed=passed,
                metadata=metadata,
                partition=config.tenant,
            )
        )


@job(name="snapshot_health_job", description="the tenant_* checks of one tenant, without a backup")
def health_job():
    tenant_health_op()


@schedule(
    name="snapshot_health",
    job=health_job,
    cron_schedule=os.environ.get("LONGMEM_ETL_HEALTH_CRON", "15 * * * *"),
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly, per tenant, without a backup: every snapshot intact and the newest intact "
    "one younger than $LONGMEM_ETL_MAX_AGE (the freshness alarm): the tenant_* checks.",
)
def snapshot_health(context: ScheduleEvaluationContext):
    tenants = tenants_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    if not tenants:
        return SkipReason("no tenants registered yet (see the tenant_registry sensor)")
    hour = context.scheduled_execution_time.strftime("%Y-%m-%dT%H")
    return [
        RunRequest(
            run_key=f"health-{tenant}-{hour}",
            run_config={"ops": {"tenant_health_op": {"config": {"tenant": tenant}}}},
            tags={"longmem-etl/tenant": tenant},
        )
        for tenant in tenants
    ]

"""The whole code location: backup, analysis and migration domains, shared resources.

Runs on the multiprocess executor by default (one process per step, ``$LONGMEM_ETL_MAX_CONCURRENT``
at once; ``LONGMEM_ETL_EXECUTOR=in_process`` runs every step in the run's own process, for quick
local runs and tests). A deployment swaps the run launcher / executor in its own config without
touching this file (docs/dagster.md).
"""

from __future__ import annotations

import os

from dagster import Definitions, ExecutorDefinition, in_process_executor, multiprocess_executor

from pipelines.analysis.assets import memories_clean, warehouse
from pipelines.analysis.checks import analysis_checks
from pipelines.analysis.report import memories_report
from pipelines.backup.assets import account_dump, memories_snapshot
from pipelines.backup.checks import backup_checks
from pipelines.backup.schedules import backup_job, daily_backup, health_job, snapshot_health
from pipelines.backup.sensors import tenant_registry
from pipelines.migration.assets import tenant_migration
from pipelines.migration.checks import migration_checks
from pipelines.migration.sensors import migrate_after_backup, migration_job
from pipelines.resources import default_resources

ASSETS = [
    memories_snapshot,
    account_dump,
    memories_clean,
    warehouse,
    memories_report,
    tenant_migration,
]
CHECKS = [*backup_checks, *analysis_checks, *migration_checks]


def build_defs() -> Definitions:
    """Build the Definitions (resources are read from the environment at this point)."""
    return Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[backup_job, migration_job, health_job],
        schedules=[daily_backup, snapshot_health],
        sensors=[tenant_registry, migrate_after_backup],
        resources=default_resources(),
        executor=default_executor(),
    )


def default_executor() -> ExecutorDefinition:
    """multiprocess (default, optionally capped) or in_process, from the environment."""
    if os.environ.get("LONGMEM_ETL_EXECUTOR", "multiprocess") == "in_process":
        return in_process_executor
    max_concurrent = int(os.environ.get("LONGMEM_ETL_MAX_CONCURRENT", "0")) or None
    if max_concurrent:
        return multiprocess_executor.configured({"max_concurrent": max_concurrent})
    return multiprocess_executor


defs = build_defs()

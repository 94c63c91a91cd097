"""The migration domain's Definitions: the tenant migration, its exact verification check, its job
and the (off by default) migrate-after-backup sensor. Merged in ``pipelines/definitions.py``."""

from dagster import Definitions

from pipelines.migration.assets import tenant_migration
from pipelines.migration.checks import migration_checks
from pipelines.migration.sensors import migrate_after_backup, migration_job

defs = Definitions(
    assets=[tenant_migration],
    asset_checks=migration_checks,
    jobs=[migration_job],
    sensors=[migrate_after_backup],
)

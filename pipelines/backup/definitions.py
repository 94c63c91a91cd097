"""The backup domain's Definitions: snapshot + dump assets, their checks, the daily schedule and the
tenant registry. Merged with the other domains in ``pipelines/definitions.py``."""

from dagster import Definitions

from pipelines.backup.assets import account_dump, memories_snapshot
from pipelines.backup.checks import backup_checks
from pipelines.backup.schedules import backup_job, daily_backup
from pipelines.backup.sensors import tenant_registry

defs = Definitions(
    assets=[memories_snapshot, account_dump],
    asset_checks=backup_checks,
    jobs=[backup_job],
    schedules=[daily_backup],
    sensors=[tenant_registry],
)

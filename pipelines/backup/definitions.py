"""The backup domain's Definitions: snapshot + dump assets, their checks, the daily schedule, the
hourly health schedule and the tenant registry. Merged with the other domains in ``pipelines/definitions.py``."""

from dagster import Definitions

from pipelines.backup.assets import account_dump, memories_snapshot
from pipelines.backup.checks import backup_checks
from pipelines.backup.schedules import backup_job, daily_backup, health_job, snapshot_health
from pipelines.backup.sensors import tenant_registry

defs = Definitions(
    assets=[memories_snapshot, account_dump],
    asset_checks=backup_checks,
    jobs=[backup_job, health_job],
    schedules=[daily_backup, snapshot_health],
    sensors=[tenant_registry],
)

"""``publish_after_backup_or_clean``: the automation sensor that runs ``iceberg_tables`` (eager
condition) for a tenant whenever its ``memories_snapshot`` or ``memories_clean`` materialized.

On by default (Dagster's own default automation sensor starts stopped), so a deployment with the
daemon running keeps the Iceberg tables in step without extra setup; turn it off in the UI to
publish only by hand (``dagster asset materialize --select iceberg_tables``)."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from pipelines.lakehouse.assets import iceberg_tables

publish_after_backup_or_clean = AutomationConditionSensorDefinition(
    "publish_after_backup_or_clean",
    target=AssetSelection.assets(iceberg_tables),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Publish a tenant's new snapshots to Iceberg after each backup or clean.",
)

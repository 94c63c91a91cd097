"""``tenant_registry``: keeps the ``tenants`` partitions in step with the configured tenants.

Adds (never removes) the tenants named in ``$LONGMEM_ETL_TENANTS`` (comma-separated), or by default
the sample tenants, so a fresh ``dagster dev`` shows partitions to run. Removing a tenant is a
deliberate act: the UI, or ``instance.delete_dynamic_partition("tenants", name)``.
"""

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from pipelines.partitions import (
    default_tenants,
    missing_tenants,
    partition_key,
    tenants_partitions,
)


@sensor(
    name="tenant_registry",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Register the configured tenants ($LONGMEM_ETL_TENANTS or the sample tenants).",
)
def tenant_registry(context: SensorEvaluationContext):
    added = missing_tenants(context.instance, default_tenants())
    if not added:
        return SkipReason("every configured tenant is registered")
    context.log.info(f"registering tenants: {', '.join(added)}")
    return SensorResult(
        dynamic_partitions_requests=[
            tenants_partitions.build_add_request([partition_key(t) for t in added])
        ]
    )

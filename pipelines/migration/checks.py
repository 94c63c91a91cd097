"""The migration is exact: every source memory in the target once, nothing missing or extra."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from pipelines.migration.assets import tenant_migration
from pipelines.utils import latest_metadata


@asset_check(
    asset=tenant_migration,
    blocking=True,
    description="longmem_etl.migrate.verify: per collection counts, missing, extra, duplicated",
)
def migration_verified_exact(context: AssetCheckExecutionContext) -> AssetCheckResult:
    from longmem_etl.migrate import verify

    meta = latest_metadata(context.instance, tenant_migration.key, context.partition_key)
    report = verify(meta["source_snapshot"], meta["target"])
    return AssetCheckResult(
        passed=bool(report["exact"]),
        metadata={
            "missing": int(report["missing"]),
            "extra": int(report["extra"]),
            "duplicated": int(report["duplicated"]),
        },
    )


migration_checks = [migration_verified_exact]

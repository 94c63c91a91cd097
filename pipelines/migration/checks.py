"""The migration is exact: every source memory in the target once, nothing missing or extra."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from pipelines.migration.assets import tenant_migration
from pipelines.utils import latest_metadata, md_table


@asset_check(
    asset=tenant_migration,
    blocking=True,
    description="An independent re-verification (verify_source_target): nothing missing, "
    "duplicated or extra, per collection and container tag",
)
def migration_verified_exact(context: AssetCheckExecutionContext) -> AssetCheckResult:
    from longmem_etl.migrate import verify_source_target

    meta = latest_metadata(context.instance, tenant_migration.key, context.partition_key)
    if "source_snapshot" not in meta:
        return AssetCheckResult(passed=False, metadata={"problem": "no migration recorded"})
    report = verify_source_target(
        str(meta["source_snapshot"]),
        str(meta["target"]),
        spec=str(meta.get("spec") or "") or None,
        migration_id=str(meta.get("source_key") or "") or None,
        scoped=True,
        target_key_env=str(meta.get("target_key_env") or DEFAULT_KEY_ENV),
    )
    bad = [
        (
            g["collection"],
            g["container_tag"],
            g["source"],
            g["missing"],
            g["duplicated"],
            g["extra"],
        )
        for g in report.groups
        if g["missing"] or g["duplicated"] or g["extra"]
    ]
    return AssetCheckResult(
        passed=report.exact,
        metadata={
            **{k: int(v) for k, v in report.totals.items()},
            "mismatched_groups": md_table(
                ["collection", "container_tag", "source", "missing", "duplicated", "extra"],
                bad[:50],
            ),
        },
    )


migration_checks = [migration_verified_exact]

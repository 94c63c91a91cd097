"""``account_dump`` -> ``memories_snapshot``: per-tenant backup, thin over ``longmem_etl.backup``.

``account_dump`` exports the tenant through the source endpoint into a dump file (the raw archive a
restore can seed from); ``memories_snapshot`` turns that dump into a verified Parquet snapshot under
the snapshot root and applies retention. Both record what they wrote as metadata; no metadata ever
holds a key or a key-bearing URI (URIs pass through ``safe_uri``).
"""

from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from pipelines.partitions import tenants_partitions
from pipelines.resources import LongmemEndpoint, SnapshotRoot
from pipelines.utils import latest_path, snapshot_metadata


class DumpConfig(Config):
    """How to export: one ``export_account`` call, or paged listing for very large tenants."""

    paged: bool = False


class SnapshotConfig(Config):
    """Retention and strictness of the snapshot conversion."""

    keep: int = 7
    """Snapshots kept per tenant after this one is written (0 keeps all)."""
    strict: bool = False
    """Fail on any rejected row instead of keeping it in rejected.parquet."""


@asset(
    partitions_def=tenants_partitions,
    group_name="backup",
    kinds={"longmem", "json"},
    description="The tenant's account, exported through the source endpoint into a dump file.",
)
def account_dump(
    context: AssetExecutionContext,
    config: DumpConfig,
    source: LongmemEndpoint,
    snapshot_root: SnapshotRoot,
) -> MaterializeResult:
    from longmem_etl.backup import export_dump

    tenant = context.partition_key
    out_dir = snapshot_root.root().parent / "dumps" / f"tenant={tenant}"
    result = export_dump(
        source.prepare(tenant),
        out_dir,
        tenant=tenant,
        paged=config.paged,
        key_env=source.key_env(tenant),
    )
    path = Path(result["path"])
    return MaterializeResult(
        metadata={
            "dump_path": MetadataValue.path(str(path)),
            "source": source.display_uri(tenant),
            "memories": result["memories"],
            "collections": result["collections"],
            "bytes": path.stat().st_size,
        }
    )


@asset(
    partitions_def=tenants_partitions,
    group_name="backup",
    deps=[account_dump],
    kinds={"parquet"},
    description="The dump as a Parquet snapshot (ROOT/tenant=T/snapshot=TS), with retention.",
)
def memories_snapshot(
    context: AssetExecutionContext, config: SnapshotConfig, snapshot_root: SnapshotRoot
) -> MaterializeResult:
    from longmem_etl.backup import apply_retention

    from longmem_etl.snapshots import convert_dump

    tenant = context.partition_key
    dump = latest_path(context.instance, "account_dump", tenant, "dump_path")
    if dump is None:
        raise RuntimeError(f"account_dump has no materialization for tenant {tenant}")
    root = snapshot_root.root()
    snap = Path(convert_dump(dump, root, tenant=tenant, strict=config.strict))
    removed = apply_retention(root, tenant, keep=config.keep) if config.keep else []
    meta = snapshot_metadata(snap)
    meta["retention_removed"] = len(removed)
    meta["keep"] = config.keep
    return MaterializeResult(metadata=meta)

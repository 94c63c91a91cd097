"""``memories_snapshot`` and ``account_dump``: the per-tenant daily backup, thin over the library.

``memories_snapshot`` is ``longmem_etl.backup.backup``: export the tenant through the source
endpoint (one ``export_account`` call, or paged for very large tenants), verify the export against
the source's own counts, write an atomic Parquet snapshot under the snapshot root and prune to
``keep`` snapshots. ``account_dump`` writes that snapshot back out as a lossless dump file
(``longmem_etl.dumps.write_dump``, ``.json.zst``): the portable archive a restore seeds from
(``longmem-etl local seed``, or the SDK's ``import_memories``); it keeps the dumps of the snapshots
retention kept. Metadata never holds a key or a key-bearing URI (URIs pass through ``safe_uri``).
"""

from pathlib import Path

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from pipelines.partitions import tenant_of, tenants_partitions
from pipelines.resources import LongmemEndpoint, SnapshotRoot
from pipelines.utils import latest_path, md_table, snapshot_metadata


class BackupConfig(Config):
    """How to export and how many snapshots to keep."""

    paged: bool = False
    """Page through list_memories instead of one export_account call (very large tenants)."""
    keep: int = 7
    """Snapshots kept per tenant after this one is written (0 keeps all)."""


@asset(
    partitions_def=tenants_partitions,
    group_name="backup",
    kinds={"longmem", "parquet"},
    description="The tenant exported through the source endpoint, verified, as a Parquet snapshot "
    "(ROOT/tenant=T/snapshot=TS), with retention.",
)
def memories_snapshot(
    context: AssetExecutionContext,
    config: BackupConfig,
    source: LongmemEndpoint,
    snapshot_root: SnapshotRoot,
) -> MaterializeResult:
    from longmem_etl.backup import backup

    tenant = tenant_of(context.partition_key)
    result = backup(
        source.prepare(tenant),
        snapshot_root.root(),
        tenant=tenant,
        paged=config.paged,
        keep=config.keep or None,
        key_env=source.key_env(tenant),
    )
    context.log.info(f"backed up {tenant}: {result.memories} memories -> {result.path}")
    meta = snapshot_metadata(result.path)
    checks = result.verification or {}
    meta.update(
        {
            "source": source.display_uri(tenant),
            "mode": result.mode,
            "keep": config.keep,
            "pruned": len(result.pruned),
            "source_verification": MetadataValue.json(checks),
            "seconds": result.seconds,
        }
    )
    return MaterializeResult(metadata=meta)


@asset(
    partitions_def=tenants_partitions,
    group_name="backup",
    deps=[memories_snapshot],
    kinds={"json"},
    description="The backup snapshot as a lossless dump file (.json.zst) for restores.",
)
def account_dump(context: AssetExecutionContext, snapshot_root: SnapshotRoot) -> MaterializeResult:
    from longmem_etl.dumps import write_dump
    from longmem_etl.snapshots import list_snapshots

    tenant = tenant_of(context.partition_key)
    snap = latest_path(
        context.instance, "memories_snapshot", context.partition_key, "snapshot_path"
    )
    if snap is None:
        raise Failure(f"memories_snapshot has no materialization for tenant {tenant}")
    root = snapshot_root.root()
    out_dir = dumps_dir(root, tenant)
    written = write_dump(snap, out_dir / f"{snap.name}.json.zst")
    path = Path(written["path"])
    kept = {p.name for p in list_snapshots(root, tenant)}
    removed = 0
    for old in out_dir.glob("snapshot=*.json.zst"):
        if old.name[: -len(".json.zst")] not in kept:  # its snapshot was pruned: so is the dump
            old.unlink(missing_ok=True)
            removed += 1
    return MaterializeResult(
        metadata={
            "dump_path": MetadataValue.path(str(path)),
            "snapshot_path": MetadataValue.path(str(snap)),
            "memories": int(written["memories"]),
            "collections": int(written["collections"]),
            "format": str(written.get("format")),
            "bytes": path.stat().st_size,
            "dumps_removed": removed,
            "summary": md_table(
                ["memories", "collections", "bytes"],
                [(written["memories"], written["collections"], path.stat().st_size)],
            ),
        }
    )


def dumps_dir(root: Path, tenant: str) -> Path:
    """Dump files live beside the snapshot root: ``<root>/../dumps/tenant=<encoded t>/`` (the
    snapshot layout's folder encoding, so tenants never share a dumps folder)."""
    from longmem_etl.snapshots import encode_tenant

    out = Path(root).parent / "dumps" / f"tenant={encode_tenant(tenant)}"
    out.mkdir(parents=True, exist_ok=True)
    return out

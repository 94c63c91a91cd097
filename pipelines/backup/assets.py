"""``memories_snapshot`` and ``account_dump``: the per-tenant daily backup, thin over the library.

``memories_snapshot`` is ``longmem_etl.backup.backup``: export the tenant through the source
endpoint (one ``export_account`` call, or paged for very large tenants), verify the export against
the source's own counts, write an atomic Parquet snapshot under the snapshot root, then apply the
retention policy in ``BackupConfig`` (``forget``'s code: ``longmem_etl.retention``). ``account_dump`` writes that snapshot back out as a lossless dump file
(``longmem_etl.snapshots.dump.write_dump``, ``.json.zst``): the portable archive a restore seeds from
(``longmem-etl local seed``, or the SDK's ``import_memories``); it keeps the dumps of the snapshots
retention kept. Metadata never holds a key or a key-bearing URI (URIs pass through ``safe_uri``).
"""

from pathlib import Path

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from pipelines.partitions import tenant_of, tenants_partitions
from pipelines.resources import LongmemEndpoint, SnapshotRoot, state_home
from pipelines.utils import latest_path, md_table, snapshot_metadata


class BackupConfig(Config):
    """How to export, and the retention policy ``forget`` applies after the backup (restic's rules,
    ``longmem_etl.retention``; every rule 0 = keep everything)."""

    paged: bool = False
    """Page through list_memories instead of one export_account call (very large tenants)."""
    keep: int = 7
    """--keep-last: the newest N snapshots per tenant (0 = rule off)."""
    keep_hourly: int = 0
    """The newest snapshot of each of the N newest UTC hours that have one (-1 = unlimited)."""
    keep_daily: int = 0
    """The newest snapshot of each of the N newest UTC days that have one (-1 = unlimited)."""
    keep_weekly: int = 0
    """The newest snapshot of each of the N newest ISO weeks that have one (-1 = unlimited)."""
    keep_monthly: int = 0
    """The newest snapshot of each of the N newest months that have one (-1 = unlimited)."""
    keep_yearly: int = 0
    """The newest snapshot of each of the N newest years that have one (-1 = unlimited)."""
    keep_within: str = ""
    """Keep everything newer than the newest snapshot minus this (``7d``, ``36h``, ``1y6m``)."""

    def policy(self):
        """The ``retention.Policy`` these fields describe, or None (keep everything)."""
        from longmem_etl.retention import Policy

        policy = Policy.from_mapping(
            {
                "last": self.keep,
                "hourly": self.keep_hourly,
                "daily": self.keep_daily,
                "weekly": self.keep_weekly,
                "monthly": self.keep_monthly,
                "yearly": self.keep_yearly,
                "within": self.keep_within or None,
            }
        )
        return None if policy.empty else policy


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
    policy = config.policy()
    with snapshot_root.staged(tenant, write=True) as (root, _):
        result = backup(
            source.prepare(tenant),
            root,
            tenant=tenant,
            paged=config.paged,
            retention=policy,
            key_env=source.key_env(tenant),
            recipients=snapshot_root.recipients(tenant),
        )
        meta = snapshot_metadata(result.path)
    context.log.info(
        f"backed up {tenant}: {result.memories} memories -> {meta['snapshot_path'].value}"
    )
    checks = result.verification or {}
    meta.update(
        {
            "source": source.display_uri(tenant),
            "mode": result.mode,
            "keep": config.keep,
            "retention": MetadataValue.json(policy.to_json() if policy else {}),
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
    from longmem_etl.snapshots import list_snapshots
    from longmem_etl.snapshots.crypto import is_encrypted, seal_file
    from longmem_etl.snapshots.dump import write_dump
    from longmem_etl.snapshots.manifest import read_manifest

    tenant = tenant_of(context.partition_key)
    snap = latest_path(
        context.instance, "memories_snapshot", context.partition_key, "snapshot_path"
    )
    if snap is None:
        raise Failure(f"memories_snapshot has no materialization for tenant {tenant}")
    with snapshot_root.staged(tenant, snapshots=[snap]) as (root, (local,)):
        # an s3:// root keeps its dumps in the local state home (dumps are for restores here)
        out_dir = dumps_dir(state_home() / "snapshots" if snapshot_root.remote else root, tenant)
        name = str(snap).rstrip("/").rsplit("/", 1)[-1]
        written = write_dump(local, out_dir / f"{name}.json.zst")
        path = Path(written["path"])
        if is_encrypted(read_manifest(local)):  # an encrypted backup's dump is never left in clear
            path = seal_file(path, snapshot_root.recipients(tenant))
        kept = {p.name for p in list_snapshots(root, tenant)}
    removed = 0
    for old in [*out_dir.glob("snapshot=*.json.zst"), *out_dir.glob("snapshot=*.json.zst.age")]:
        if old.name.split(".json.zst", 1)[0] not in kept:  # its snapshot was pruned: so is the dump
            old.unlink(missing_ok=True)
            removed += 1
    return MaterializeResult(
        metadata={
            "dump_path": MetadataValue.path(str(path)),
            "snapshot_path": MetadataValue.path(str(snap)),  # as recorded (a path or s3:// URL)
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

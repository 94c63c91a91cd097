"""Checks on the backup: the snapshot (manifest counts, unique ids, schema; blocking) and the dump.

The dump check reads the written file back through the library's dump reader and compares it with
the snapshot it came from: same memories count, same collections count.
"""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetKey, asset_check

from pipelines.snapshot_checks import build_snapshot_checks, build_tenant_checks
from pipelines.utils import latest_metadata


@asset_check(
    asset=AssetKey("account_dump"),
    blocking=True,
    description="the dump file reads back with as many memories and collections as its snapshot",
)
def dump_matches_snapshot(context: AssetCheckExecutionContext) -> AssetCheckResult:
    from longmem_etl.dumps import open_dump
    from longmem_etl.snapshots.manifest import read_manifest

    meta = latest_metadata(context.instance, "account_dump", context.partition_key)
    if "dump_path" not in meta:
        return AssetCheckResult(passed=False, metadata={"problem": "account_dump recorded no path"})
    src = open_dump(str(meta["dump_path"]))
    memories = sum(len(raws) for _, raws in src.batches())
    collections = len(src.collections or [])
    counts = read_manifest(str(meta["snapshot_path"]))["counts"]
    return AssetCheckResult(
        passed=memories == counts["memories"] and collections == counts["collections"],
        metadata={
            "dump_memories": memories,
            "snapshot_memories": int(counts["memories"]),
            "dump_collections": collections,
            "snapshot_collections": int(counts["collections"]),
        },
    )


tenant_checks = build_tenant_checks("memories_snapshot")
backup_checks = [*build_snapshot_checks("memories_snapshot"), dump_matches_snapshot, *tenant_checks]

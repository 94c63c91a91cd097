"""Asset checks every snapshot-producing asset gets: manifest counts, unique ids, schema.

The asset records its snapshot directory as ``snapshot_path`` metadata; each check reads the
partition's latest materialization to find it, so it checks exactly what the asset wrote. The checks
are blocking: a snapshot that fails one must not feed cleaning, the warehouse or a migration.
"""

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetKey,
    MetadataValue,
    asset_check,
)

from longmem_etl import schema
from pipelines.utils import latest_path, md_table, read_sql

EXPECTED_SCHEMAS = {
    "memories.parquet": schema.MEMORIES_SCHEMA,
    "collections.parquet": schema.COLLECTIONS_SCHEMA,
    "rejected.parquet": schema.REJECTED_SCHEMA,
}


def _snapshot(context: AssetCheckExecutionContext, asset: str) -> Path | None:
    return latest_path(context.instance, asset, context.partition_key, "snapshot_path")


def _missing(asset: str) -> AssetCheckResult:
    return AssetCheckResult(
        passed=False, metadata={"problem": f"{asset} recorded no snapshot_path"}
    )


def manifest_counts_problems(snap: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Per table: (count in manifest.json, rows in the Parquet file); and any mismatch found."""
    from longmem_etl.errors import BadInput
    from longmem_etl.snapshots import open_snapshot
    from longmem_etl.snapshots.manifest import read_manifest

    manifest = read_manifest(snap)
    counts = manifest.get("counts") or {}
    seen: dict[str, tuple[int, int]] = {}
    problems = []
    try:  # the library's own check: every listed file present with its size and sha256
        open_snapshot(snap, verify=True)
    except BadInput as exc:
        problems.append(str(exc))
    from longmem_etl.snapshots.incremental import state_dir

    plain = state_dir(snap, manifest)  # full state: decrypted / materialised when need be
    for table, expected in counts.items():
        file = plain / f"{table}.parquet"
        actual = pq.ParquetFile(file).metadata.num_rows if file.exists() else 0
        seen[table] = (int(expected), actual)
        if int(expected) != actual:
            problems.append(f"{table}: manifest says {expected}, file has {actual}")
    if "memories" not in counts:
        problems.append("manifest has no memories count")
    return seen, problems


def schema_problems(snap: Path) -> list[str]:
    """Differences between the snapshot's Parquet schemas and ``longmem_etl.schema``."""
    from longmem_etl.snapshots.incremental import state_dir

    problems = []
    plain = state_dir(snap)  # full state: decrypted / materialised when need be
    for name, expected in EXPECTED_SCHEMAS.items():
        file = plain / name
        if not file.exists():
            if name != "rejected.parquet":
                problems.append(f"{name}: missing")
            continue
        actual = pq.read_schema(file)
        want = {f.name: f.type for f in expected}
        have = {f.name: f.type for f in actual}
        if list(want) != list(have):
            problems.append(f"{name}: columns {list(have)} != {list(want)}")
        for col, typ in want.items():
            if col in have and have[col] != typ:
                problems.append(f"{name}: {col} is {have[col]}, expected {typ}")
    return problems


def build_snapshot_checks(asset: str) -> list[AssetChecksDefinition]:
    """The three blocking snapshot checks on ``asset`` (which records ``snapshot_path``)."""

    @asset_check(
        asset=AssetKey(asset),
        name="manifest_counts_match",
        blocking=True,
        description="manifest.json counts equal the rows in each Parquet file; sizes and sha256 match",
    )
    def manifest_counts_match(context: AssetCheckExecutionContext) -> AssetCheckResult:
        snap = _snapshot(context, asset)
        if snap is None:
            return _missing(asset)
        seen, problems = manifest_counts_problems(snap)
        return AssetCheckResult(
            passed=not problems,
            metadata={
                "counts": md_table(
                    ["table", "manifest", "parquet"], [(t, m, a) for t, (m, a) in seen.items()]
                ),
                "problems": "; ".join(problems) or "none",
            },
        )

    @asset_check(
        asset=AssetKey(asset),
        name="ids_unique",
        blocking=True,
        description="no memory id appears twice in the snapshot",
    )
    def ids_unique(context: AssetCheckExecutionContext) -> AssetCheckResult:
        snap = _snapshot(context, asset)
        if snap is None:
            return _missing(asset)
        from longmem_etl.snapshots.incremental import state_dir

        memories = state_dir(snap) / "memories.parquet"
        with duckdb.connect() as con:
            dupes = con.execute(
                read_sql("", "duplicate_ids"), {"memories": str(memories)}
            ).fetchall()
        return AssetCheckResult(
            passed=not dupes,
            metadata={
                "duplicated_ids": len(dupes),
                "examples": MetadataValue.json([{"id": i, "n": n} for i, n in dupes]),
            },
        )

    @asset_check(
        asset=AssetKey(asset),
        name="schema_matches",
        blocking=True,
        description="Parquet schemas equal longmem_etl.schema (and schemas/*.schema.json)",
    )
    def schema_matches(context: AssetCheckExecutionContext) -> AssetCheckResult:
        snap = _snapshot(context, asset)
        if snap is None:
            return _missing(asset)
        problems = schema_problems(snap)
        return AssetCheckResult(
            passed=not problems, metadata={"problems": "; ".join(problems) or "none"}
        )

    return [manifest_counts_match, ids_unique, schema_matches]

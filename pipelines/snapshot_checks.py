"""Asset checks every snapshot-producing asset gets: manifest counts, unique ids, schema.

The asset records its snapshot directory as ``snapshot_path`` metadata; each check reads the
partition's latest materialization to find it, so it checks exactly what the asset wrote. The checks
are blocking: a snapshot that fails one must not feed cleaning, the warehouse or a migration.
"""

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
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


@contextlib.contextmanager
def _snapshot(context: AssetCheckExecutionContext, asset: str) -> Iterator[Path | None]:
    """(Context) the asset's latest snapshot as a local path (an s3:// one mirrored for the check)."""
    from longmem_etl.storage.staging import staged

    snap = latest_path(context.instance, asset, context.partition_key, "snapshot_path")
    if snap is None:
        yield None
        return
    with staged(None, [str(snap)]) as (_, (local,)):
        yield Path(str(local))


def _missing(asset: str) -> AssetCheckResult:
    return AssetCheckResult(
        passed=False, metadata={"problem": f"{asset} recorded no snapshot_path"}
    )


def manifest_counts_problems(snap: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Per table: (count in manifest.json, rows in the Parquet file); and any mismatch found."""
    from longmem_etl.snapshots.integrity import check_snapshot
    from longmem_etl.snapshots.manifest import read_manifest

    manifest = read_manifest(snap)
    counts = manifest.get("counts") or {}
    seen: dict[str, tuple[int, int]] = {}
    # the library's own check (the one every reader runs): manifest checksum, file names, sizes,
    # Parquet row counts, an increment's whole chain, and here every file's sha256
    problems = [str(p) for p in check_snapshot(snap, read_data=1.0)]
    from longmem_etl.snapshots.incremental import state_dir

    # full state: decrypted / materialised when need be (only when intact: else what is there)
    plain = snap if problems else state_dir(snap, manifest)
    for table, expected in counts.items():
        file = plain / f"{table}.parquet"
        try:
            actual = pq.ParquetFile(file).metadata.num_rows if file.exists() else 0
        except Exception:  # an unreadable footer: already a problem above
            actual = -1
        seen[table] = (int(expected), actual)
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
        with _snapshot(context, asset) as snap:
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
        with _snapshot(context, asset) as snap:
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
        with _snapshot(context, asset) as snap:
            if snap is None:
                return _missing(asset)
            problems = schema_problems(snap)
            return AssetCheckResult(
                passed=not problems, metadata={"problems": "; ".join(problems) or "none"}
            )

    return [manifest_counts_match, ids_unique, schema_matches]


def max_age() -> timedelta:
    """How old a tenant's newest intact snapshot may get (``$LONGMEM_ETL_MAX_AGE``, default 36h)."""
    from longmem_etl.snapshots.check import parse_duration

    return parse_duration(os.environ.get("LONGMEM_ETL_MAX_AGE", "36h"))


TENANT_CHECKS = ("tenant_snapshots_intact", "tenant_fresh")


def tenant_health(root: Path, tenant: str) -> dict[str, tuple[bool, dict]]:
    """``{check name: (passed, metadata)}`` for one tenant's snapshots under ``root``: all intact
    (``longmem-etl check``'s library call, ``snapshots.check.check_root``), and the newest intact
    one younger than ``max_age()`` (the freshness alarm). Shared by the asset checks and the
    ``snapshot_health`` job."""
    from longmem_etl.errors import BadInput
    from longmem_etl.snapshots.check import check_root

    limit = max_age()
    try:
        report = check_root(root, tenant=tenant, max_age=limit)
    except BadInput as exc:  # no snapshots at all: nothing intact, nothing fresh
        return {name: (False, {"problem": str(exc)}) for name in TENANT_CHECKS}
    damaged = [str(p) for snap in report.snapshots for p in snap.problems]
    status = report.tenants[0] if report.tenants else None
    when = status.newest_verified_at if status else None
    return {
        "tenant_snapshots_intact": (
            not damaged,
            {
                "snapshots": len(report.snapshots),
                "damaged": sum(1 for snap in report.snapshots if not snap.ok),
                "problems": "; ".join(damaged) or "none",
                "debris": len(report.debris),
            },
        ),
        "tenant_fresh": (
            status is not None and not status.stale,
            {
                "newest_intact_snapshot": (status.newest_verified if status else None) or "none",
                "newest_intact_at": when.isoformat() if when else "none",
                "max_age_hours": limit.total_seconds() / 3600,
            },
        ),
    }


def build_tenant_checks(asset: str) -> list[AssetChecksDefinition]:
    """``tenant_snapshots_intact`` and ``tenant_fresh`` on ``asset``, per tenant partition
    (``tenant_health``). Non-blocking: they watch all of a tenant's backups, not the run's output.
    They run with the asset; the hourly ``snapshot_health`` schedule also evaluates them in a small
    run per tenant (no backup), so a tenant whose backups stopped still raises the alarm."""
    from pipelines.resources import SnapshotRoot

    def build(name: str, description: str) -> AssetChecksDefinition:
        @asset_check(asset=AssetKey(asset), name=name, description=description)
        def _check(
            context: AssetCheckExecutionContext, snapshot_root: SnapshotRoot
        ) -> AssetCheckResult:
            from pipelines.partitions import tenant_of

            with snapshot_root.staged(tenant_of(context.partition_key)) as (root, _):
                passed, metadata = tenant_health(root, context.partition_key)[name]
            return AssetCheckResult(passed=passed, metadata=metadata)

        return _check

    return [
        build(
            "tenant_snapshots_intact",
            "every snapshot of the tenant matches its manifest (checksum, sizes, row counts)",
        ),
        build(
            "tenant_fresh",
            "the tenant's newest intact snapshot is younger than $LONGMEM_ETL_MAX_AGE (36h)",
        ),
    ]

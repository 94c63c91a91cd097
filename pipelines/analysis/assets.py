"""``memories_clean`` -> ``warehouse``: the cleaned snapshot and a DuckDB file to query it.

``memories_clean`` runs ``longmem_etl.transforms.clean_snapshot`` on the tenant's latest backup with
a TOML spec (run config; default ``longmem_etl/sample_data/specs/migration-hygiene.toml``), writing a new
snapshot under the *clean* root; rows a step removed are in its ``rejected.parquet``.
``warehouse`` (re)builds the tenant's own DuckDB file with ``longmem_etl.warehouse.connect`` views
over the clean root: one file per tenant, so parallel tenant runs never share a DuckDB writer (each
file's views see every cleaned snapshot present when it was refreshed; filter on ``tenant``).
"""

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from longmem_etl.samples import sample_data_dir
from pipelines.backup.assets import memories_snapshot
from pipelines.partitions import tenant_of, tenants_partitions
from pipelines.resources import SnapshotRoot, WarehouseResource
from pipelines.utils import latest_path, md_table, read_sql, snapshot_metadata


def default_spec() -> str:
    return str(sample_data_dir() / "specs" / "migration-hygiene.toml")


class CleanConfig(Config):
    """Which transform spec to apply (a TOML file path)."""

    spec: str = ""
    """Path of the spec; empty means longmem_etl/sample_data/specs/migration-hygiene.toml."""


@asset(
    partitions_def=tenants_partitions,
    group_name="analysis",
    deps=[memories_snapshot],
    kinds={"duckdb", "parquet"},
    description="The latest backup cleaned by a declarative spec; removed rows kept as rejected.",
)
def memories_clean(
    context: AssetExecutionContext,
    config: CleanConfig,
    clean_root: SnapshotRoot,
) -> MaterializeResult:
    from longmem_etl.transforms.run import clean_snapshot

    tenant = tenant_of(context.partition_key)
    source = latest_path(
        context.instance, "memories_snapshot", context.partition_key, "snapshot_path"
    )
    if source is None:
        raise Failure(f"memories_snapshot has no materialization for tenant {tenant}")
    spec = config.spec or default_spec()
    from longmem_etl.storage.staging import staged

    # the source (a path or an s3:// URL) and the clean root, mirrored when on S3
    with (
        staged(None, [str(source)]) as (_, (src,)),
        clean_root.staged(tenant, write=True) as (root, _),
    ):
        result = clean_snapshot(
            src, spec, root, tenant=tenant, recipients=clean_root.recipients(tenant)
        )
        meta = snapshot_metadata(result.path)
    report = result.report
    meta.update(
        {
            "source_snapshot": MetadataValue.path(str(source)),
            "spec": MetadataValue.path(str(spec)),
            "spec_sha256": result.spec_sha256,
            "rows_in": report.rows_in,
            "rows_out": report.rows_out,
            "removed": report.rejected,
            "steps": md_table(
                ["#", "step", "kind", "in", "out", "rejected"],
                [(s.step, s.name, s.kind, s.rows_in, s.rows_out, s.rejected) for s in report.steps],
            ),
        }
    )
    return MaterializeResult(metadata=meta)


@asset(
    partitions_def=tenants_partitions,
    group_name="analysis",
    deps=[memories_clean],
    kinds={"duckdb"},
    description="The tenant's DuckDB file: warehouse views (memories, latest_memories, collections, "
    "rejected, snapshots) over the cleaned snapshots, refreshed after each clean.",
)
def warehouse(
    context: AssetExecutionContext,
    clean_root: SnapshotRoot,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    from longmem_etl.warehouse import connect

    tenant = tenant_of(context.partition_key)
    path = warehouse.database_path(tenant)
    if clean_root.remote:  # its views would name a private mirror that is gone after the run
        raise Failure(
            f"{clean_root.location()}: the warehouse asset keeps a DuckDB file of views over local "
            "snapshots; over an s3:// root query with `longmem-etl sql --root s3://...`"
        )
    con = connect(clean_root.root(), database=str(path))
    try:
        rows = con.execute(read_sql("analysis", "warehouse_summary"), {"tenant": tenant}).fetchall()
        views = [r[0] for r in con.execute(read_sql("analysis", "views")).fetchall()]
    finally:
        con.close()
    return MaterializeResult(
        metadata={
            "database": MetadataValue.path(str(path)),
            "bytes": path.stat().st_size,
            "views": ", ".join(views),
            "snapshots": md_table(["snapshot", "memories", "collections"], rows),
        }
    )

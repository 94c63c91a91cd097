"""``iceberg_tables``: after each backup or clean of a tenant, its new snapshots appended to Iceberg.

Thin over ``longmem_etl.lakehouse.publish.publish`` (what ``longmem-etl publish`` runs), once for
the backup root into ``NS.memories`` / ``NS.collections`` / ``NS.rejected`` and once for the clean
root into ``NS_clean.*``, restricted to the partition's tenant. Exactly once per snapshot and
table, whatever re-runs, retries or parallel tenant runs do: the tables' snapshot summaries are the
journal. It runs whenever ``memories_snapshot`` or ``memories_clean`` of the tenant materialized
(``PUBLISH_CONDITION``, evaluated by the ``publish_after_backup_or_clean`` sensor, on by default). Metadata: the snapshots appended and
their rows per table; the catalog URI without credentials.
"""

from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from pipelines.analysis.assets import memories_clean
from pipelines.backup.assets import memories_snapshot
from pipelines.partitions import tenant_of, tenants_partitions
from pipelines.resources import IcebergCatalog, SnapshotRoot
from pipelines.utils import md_table

PUBLISH_CONDITION = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("after each backup or clean")
"""Like ``AutomationCondition.eager()`` but without its "no dependency missing" clause: a tenant
that is backed up and never cleaned is still published after each backup."""


@asset(
    partitions_def=tenants_partitions,
    group_name="lakehouse",
    deps=[memories_snapshot, memories_clean],
    kinds={"iceberg", "parquet"},
    automation_condition=PUBLISH_CONDITION,
    description="The tenant's backup and cleaned snapshots appended to Apache Iceberg tables "
    "(NS.memories/collections/rejected and NS_clean.*), one append per snapshot and table.",
)
def iceberg_tables(
    context: AssetExecutionContext,
    snapshot_root: SnapshotRoot,
    clean_root: SnapshotRoot,
    iceberg: IcebergCatalog,
) -> MaterializeResult:
    from longmem_etl.lakehouse.publish import publish

    tenant = tenant_of(context.partition_key)
    rows = []
    totals: dict[str, int] = {}
    for root, namespace in (
        (snapshot_root.root(), iceberg.namespace),
        (clean_root.root(), f"{iceberg.namespace}_clean"),
    ):
        result = publish(
            root,
            iceberg.catalog_uri(),
            iceberg.warehouse_path(),
            namespace=namespace,
            tenant=tenant,
        )
        for a in result.appended:
            rows.append((namespace, a.snapshot, a.rows["memories"], a.rows["collections"],
                         a.rows["rejected"], ", ".join(a.tables)))  # fmt: skip
        for table, n in result.rows.items():
            totals[f"{namespace}.{table}"] = n
        context.log.info(result.render())
    return MaterializeResult(
        metadata={
            "catalog": iceberg.display_catalog(),
            "warehouse": MetadataValue.path(iceberg.warehouse_path()),
            "appended_snapshots": len(rows),
            "appended": md_table(
                ["namespace", "snapshot", "memories", "collections", "rejected", "tables"], rows
            ),
            "rows_appended": MetadataValue.json(totals),
        }
    )

"""``memories_report``: the analyst report of a tenant's cleaned snapshot, after each clean.

Thin over ``longmem_etl.report.build_report`` / ``write_report`` (the same calls as
``longmem-etl report``). It reports the tenant's newest snapshot under the *clean* root: its rows,
the rows the clean and the backup rejected (the cleaned snapshot's parent chain), what changed
since the previous cleaned snapshot, and the verification of migrations run from the backup or
clean root. The HTML is written to ``{home}/reports/<tenant>.html`` (config ``out_dir``); the key
figures go into the materialization's metadata as tables, so the UI shows them without opening it.
"""

from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from pipelines.analysis.assets import memories_clean
from pipelines.backup.assets import memories_snapshot
from pipelines.partitions import tenant_of, tenants_partitions
from pipelines.resources import SnapshotRoot, render, state_home


class ReportConfig(Config):
    """Where the HTML goes and how stale is stale."""

    out_dir: str = ""
    """Folder for <tenant>.html ({home} allowed); empty means {home}/reports."""
    stale_days: int = 180
    """A memory not updated for this many days before the snapshot counts as stale."""


def _type(values: list[Any]) -> str:
    seen = [v for v in values if v is not None]
    if seen and all(isinstance(v, bool) for v in seen):
        return "bool"
    if seen and all(isinstance(v, int) and not isinstance(v, bool) for v in seen):
        return "int"
    if seen and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
        return "float"
    return "string"


def table_metadata(figure: Any, limit: int = 25) -> MetadataValue:
    """A report figure as a Dagster table (typed columns; the first ``limit`` rows)."""
    rows = figure.rows[:limit]
    cols = [TableColumn(name, _type([r[i] for r in rows])) for i, name in enumerate(figure.columns)]
    return MetadataValue.table(
        [TableRecord(dict(zip(figure.columns, r, strict=True))) for r in rows],
        schema=TableSchema(columns=cols),
    )


@asset(
    partitions_def=tenants_partitions,
    group_name="analysis",
    deps=[memories_snapshot, memories_clean],
    kinds={"duckdb", "html"},
    description="Analyst report of the tenant's cleaned snapshot: growth, tags, distributions, "
    "duplicates, personal-data findings, rejected rows, changes, migrations (offline HTML + "
    "key figures as tables).",
)
def memories_report(
    context: AssetExecutionContext,
    config: ReportConfig,
    snapshot_root: SnapshotRoot,
    clean_root: SnapshotRoot,
) -> MaterializeResult:
    from longmem_etl.report import build_report, write_report
    from longmem_etl.snapshots import sanitize_tenant
    from pipelines.migration.assets import migrations_root

    tenant = sanitize_tenant(context.partition_key)
    with (
        clean_root.staged(tenant_of(context.partition_key)) as (clean, _),
        snapshot_root.staged(tenant_of(context.partition_key)) as (snaps, _),
    ):
        report = build_report(
            clean,
            [tenant],
            migration_dirs=[migrations_root()],
            migration_roots=[snaps],
            stale_days=config.stale_days,
        )
    out_dir = Path(render(config.out_dir)) if config.out_dir else state_home() / "reports"
    path = write_report(report, out_dir / f"{tenant}.html")
    (t,) = report.tenants
    f = t.figures
    ov = f["overview"].records()[0]
    return MaterializeResult(
        metadata={
            "report_path": MetadataValue.path(str(path)),
            "snapshot": t.snapshot,
            "snapshot_path": MetadataValue.path(t.path),
            "memories": ov["memories"],
            "overview": table_metadata(f["overview"]),
            "container_tags": table_metadata(f["container_tags"]),
            "duplicates": table_metadata(f["duplicates"]),
            "personal_data": table_metadata(f["personal_data"]),
            "rejected": table_metadata(f["rejected"]),
            "changes": table_metadata(f["changes"]),
            "migrations": table_metadata(f["migrations"]),
        }
    )

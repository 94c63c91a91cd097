"""Checks on the analysis assets: cleaning conserves rows, and the clean snapshot is sound."""

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from pipelines.analysis.assets import memories_clean
from pipelines.snapshot_checks import build_snapshot_checks
from pipelines.utils import latest_path, md_table, read_sql


def clean_balance_counts(source: Path, clean: Path) -> tuple[int, int, list[tuple[str, int]]]:
    """(rows in the source snapshot, rows in the clean one, removed rows per step)."""
    from longmem_etl.snapshots.incremental import state_dir

    source, clean = state_dir(source), state_dir(clean)  # full states (decrypted / materialised)
    rows_in = pq.ParquetFile(source / "memories.parquet").metadata.num_rows
    rows_out = pq.ParquetFile(clean / "memories.parquet").metadata.num_rows
    rejected = clean / "rejected.parquet"
    per_step: list[tuple[str, int]] = []
    if rejected.exists():
        with duckdb.connect() as con:
            per_step = con.execute(
                read_sql("analysis", "clean_balance"), {"rejected": str(rejected)}
            ).fetchall()
    return rows_in, rows_out, per_step


@asset_check(
    asset=memories_clean,
    blocking=True,
    description="rows in == rows out + rows rejected by the spec's steps (nothing silently lost)",
)
def clean_input_equals_output_plus_rejected(
    context: AssetCheckExecutionContext,
) -> AssetCheckResult:
    source = latest_path(
        context.instance, "memories_clean", context.partition_key, "source_snapshot"
    )
    clean = latest_path(context.instance, "memories_clean", context.partition_key, "snapshot_path")
    if source is None or clean is None:
        return AssetCheckResult(
            passed=False, metadata={"problem": "memories_clean recorded no paths"}
        )
    rows_in, rows_out, per_step = clean_balance_counts(source, clean)
    removed = sum(n for _, n in per_step)
    return AssetCheckResult(
        passed=rows_in == rows_out + removed,
        metadata={
            "rows_in": rows_in,
            "rows_out": rows_out,
            "rejected": removed,
            "rejected_per_step": md_table(["step", "rows"], per_step),
        },
    )


analysis_checks = [
    clean_input_equals_output_plus_rejected,
    *build_snapshot_checks("memories_clean"),
]

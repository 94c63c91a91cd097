"""Small helpers the domains share: metadata building and finding what an asset last wrote."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, MetadataValue

SQL_DIR = Path(__file__).resolve().parent


def read_sql(domain: str, name: str) -> str:
    """The text of ``pipelines/<domain>/<name>.sql`` (``domain`` "" for the shared ones)."""
    return (SQL_DIR / domain / f"{name}.sql").read_text(encoding="utf-8")


def md_table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> MetadataValue:
    """A markdown table for the Dagster UI."""
    headers = list(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return MetadataValue.md("\n".join(lines))


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (a snapshot directory)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def latest_metadata(
    instance: DagsterInstance, asset: str | AssetKey, partition: str | None
) -> Mapping[str, Any]:
    """The metadata of the asset's latest materialization for ``partition`` (empty if none)."""
    key = asset if isinstance(asset, AssetKey) else AssetKey(asset)
    result = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=key, asset_partitions=[partition] if partition is not None else None
        ),
        limit=1,
    )
    if not result.records:
        return {}
    mat = result.records[0].asset_materialization
    return {} if mat is None else {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def latest_path(instance: DagsterInstance, asset: str, partition: str, field: str) -> Path | None:
    """A path recorded in the asset's latest materialization metadata (e.g. ``snapshot_path``)."""
    value = latest_metadata(instance, asset, partition).get(field)
    if value is None:
        return None
    text = str(value)
    return text if text.startswith("s3://") else Path(text)  # type: ignore[return-value]


def snapshot_metadata(snap: Path) -> dict[str, Any]:
    """Materialization metadata of a snapshot: path, bytes, counts, rejected, per collection."""
    import duckdb

    from longmem_etl.snapshots.incremental import state_dir
    from longmem_etl.snapshots.manifest import read_manifest
    from longmem_etl.storage.staging import to_remote

    snap = Path(snap)
    manifest = read_manifest(snap)
    counts = manifest.get("counts") or {}
    memories = state_dir(snap, manifest) / "memories.parquet"  # the full state
    with duckdb.connect() as con:
        per_collection = con.execute(
            read_sql("", "collection_counts"), {"memories": str(memories)}
        ).fetchall()
    return {
        "snapshot_path": MetadataValue.path(to_remote(str(snap))),  # s3:// URL, not the mirror
        "snapshot": snap.name,
        "memories": int(counts.get("memories", 0)),
        "collections": int(counts.get("collections", 0)),
        "rejected": int(counts.get("rejected", 0)),
        "bytes": dir_bytes(snap),
        "per_collection": md_table(["collection", "memories"], per_collection),
    }

"""Parquet snapshots: layout, atomic writer, reader, manifest, and dump -> snapshot conversion."""

from longmem_etl.snapshots.convert import ConvertResult, convert_dump, snapshot_from_dump
from longmem_etl.snapshots.layout import (
    decode_tenant,
    encode_tenant,
    latest_snapshot,
    list_snapshots,
    sanitize_tenant,
    snapshot_tenant,
    tenant_dir,
    tenant_from_header,
)
from longmem_etl.snapshots.reader import Snapshot, batch_to_dump_memories, open_snapshot
from longmem_etl.snapshots.writer import SnapshotWriter

__all__ = [
    "ConvertResult",
    "Snapshot",
    "SnapshotWriter",
    "batch_to_dump_memories",
    "decode_tenant",
    "encode_tenant",
    "convert_dump",
    "latest_snapshot",
    "list_snapshots",
    "open_snapshot",
    "sanitize_tenant",
    "snapshot_from_dump",
    "snapshot_tenant",
    "tenant_dir",
    "tenant_from_header",
]

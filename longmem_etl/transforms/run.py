"""Run a spec over a snapshot and write the result as a NEW snapshot (the source is never touched).

`clean_snapshot` is what ``longmem-etl clean`` and ``migrate --spec`` call. The new snapshot's parent
is the source snapshot; its manifest's ``transform`` entry records the spec path, its sha256, the
``now`` used, the steps and the per-step report. ``rejected.parquet`` holds exactly the rows the
spec removed (stage = step name). The source's own convert-stage rejected rows are *not* copied:
they were never part of the memories the spec saw, and they stay in the parent snapshot, which the
manifest names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from longmem_etl.interrupts import interruptible
from longmem_etl.progress import progress
from longmem_etl.transforms.engine import Report, apply_spec
from longmem_etl.transforms.sandbox import open_sandbox
from longmem_etl.transforms.spec import Spec, load_spec
from longmem_etl.transforms.steps import describe

BATCH_ROWS = 100_000

__all__ = ["CleanResult", "apply_spec", "clean_snapshot", "load_spec", "rewrite_collections"]


@dataclass
class CleanResult:
    source: Path
    path: Path | None  # the new snapshot; None on a dry run
    tenant: str
    spec_path: str
    spec_sha256: str
    report: Report
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "snapshot": str(self.path) if self.path else None,
            "tenant": self.tenant,
            "spec": self.spec_path,
            "spec_sha256": self.spec_sha256,
            "dry_run": self.dry_run,
            **self.report.to_dict(),
        }

    def render(self) -> str:
        """What ``longmem-etl clean`` prints on a terminal: the per-step table, then where it went."""
        where = "dry run: nothing written" if self.dry_run else f"snapshot {self.path}"
        return f"{self.report.table()}\n{where}"


def rewrite_collections(collections: list[Any] | None, spec: Spec) -> list[Any] | None:
    """Apply the spec's `rename_collections` steps to a dump's collections list.

    Strings are renamed; objects get their ``name`` renamed. When a rename merges two collections the
    first entry (by position) is kept and later ones with the same name are dropped.
    """
    if collections is None:
        return None
    out = list(collections)
    for step in spec.steps:
        if step.kind != "rename_collections":
            continue
        mapping: dict[str, str] = step.options["map"]
        renamed: list[Any] = []
        seen: set[str] = set()
        for item in out:
            name = None
            if isinstance(item, str):
                item = mapping.get(item, item)
                name = item
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                if item["name"] in mapping:
                    item = {**item, "name": mapping[item["name"]]}
                name = item["name"]
            if name is not None:
                if name in seen:
                    continue
                seen.add(name)
            renamed.append(item)
        out = renamed
    return out


def clean_snapshot(
    snapshot_path: str | os.PathLike,
    spec_path: str | os.PathLike | Spec,
    root: str | os.PathLike,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    tenant: str | None = None,
    recipients: list[Any] | None = None,
    incremental: Any = None,
) -> CleanResult:
    """Apply a spec to a snapshot and write the cleaned snapshot under ``root``.

    The spec is loaded and validated first (BadInput, nothing read or written); ``dry_run`` runs every
    step and reports counts but writes nothing. ``tenant`` defaults to the source's tenant.
    ``recipients`` (``snapshots.crypto.parse_recipients``): age-encrypt the cleaned snapshot.
    ``incremental`` (``snapshots.incremental.Incremental``): store only the changes against the
    output tenant's newest snapshot under ``root`` when that pays.
    """
    from longmem_etl.snapshots.reader import open_snapshot

    spec = spec_path if isinstance(spec_path, Spec) else load_spec(spec_path)
    snap = open_snapshot(snapshot_path)
    # Every step runs sandboxed: the one file it may read is the source's memories.
    con = open_sandbox([snap.memories_path])
    try:
        with interruptible(con):
            return _clean(
                con,
                snap,
                spec,
                root,
                dry_run=dry_run,
                now=now,
                tenant=tenant,
                recipients=recipients,
                incremental=incremental,
            )
    finally:
        con.close()


def _clean(
    con: duckdb.DuckDBPyConnection,
    snap: Any,
    spec: Spec,
    root: str | os.PathLike,
    *,
    dry_run: bool,
    now: datetime | None,
    tenant: str | None,
    recipients: list[Any] | None = None,
    incremental: Any = None,
) -> CleanResult:
    from longmem_etl.snapshots.writer import SnapshotWriter

    with progress(total=len(spec.steps), desc="clean: steps", unit="step") as bar:
        applied = apply_spec(
            con,
            spec,
            snap.memories_path,
            now=now,
            defer_tail=True,
            on_step=lambda _r: bar.update(1),
        )
    result = CleanResult(
        source=snap.path,
        path=None,
        tenant=tenant or snap.tenant,
        spec_path=spec.path,
        spec_sha256=spec.sha256,
        report=applied.report,
        dry_run=dry_run,
    )
    if dry_run:
        for _ in applied.output_batches(BATCH_ROWS):  # completes the rewrite counters
            pass
        return result
    transform: dict[str, Any] = {
        "spec": spec.path,
        "spec_sha256": spec.sha256,
        "now": applied.report.now.isoformat(),
        "steps": [describe(s) for s in spec.steps],
    }
    source = {"kind": "clean", "snapshot": str(snap.path), "spec": spec.path}
    with SnapshotWriter(
        root,
        result.tenant,
        source=source,
        parent=snap.path,
        extra_manifest={"transform": transform},
        exported_at=snap.manifest.get("exported_at"),
        recipients=recipients,
        incremental=incremental,
    ) as writer:
        writer.set_header(snap.header())
        writer.set_collections(
            rewrite_collections(snap.collections() if snap.has_collections else None, spec)
        )
        with progress(total=applied.report.rows_out, desc="clean: write", unit="row") as bar:
            for batch in applied.output_batches(BATCH_ROWS):
                writer.write_memories(batch)
                bar.update(batch.num_rows)
        for batch in applied.rejected.to_arrow_reader(BATCH_ROWS):
            writer.write_rejected(batch)
        # the report is complete only now (streamed steps' counters); the manifest is written
        # when the block exits
        writer.extra_manifest["transform"] = {**transform, "report": applied.report.to_dict()}
    result.path = writer.path
    return result

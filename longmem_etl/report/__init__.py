"""The analyst report: what a tenant's snapshot holds, as numbers (``build_report``) and as one
self-contained HTML file with inline SVG charts (``write_report``). The CLI verb ``report`` and
the Dagster asset ``memories_report`` are both thin faces over these two calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from longmem_etl.errors import BadInput
from longmem_etl.report.figures import STALE_DAYS, TOP_TAGS, TenantReport


@dataclass
class Report:
    root: str
    generated_at: str
    stale_days: int
    tenants: list[TenantReport] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "generated_at": self.generated_at,
            "stale_days": self.stale_days,
            "tenants": [t.to_json() for t in self.tenants],
        }


def build_report(
    root: str | os.PathLike,
    tenants: list[str] | None = None,
    *,
    snapshot: str | None = None,
    migration_dirs: list[Path] | None = None,
    migration_roots: Sequence[Path] = (),
    stale_days: int = STALE_DAYS,
    top: int = TOP_TAGS,
    memory_limit_mb: int = 512,
) -> Report:
    """Figures for each tenant (all tenants under ``root`` when None) from its newest snapshot, or
    ``snapshot`` (a snapshot name; only with one tenant). Migrations are looked for in
    ``migration_dirs`` (default: ``report.migrations.default_dirs``) and count when their source is
    a snapshot under ``root`` or ``migration_roots``. ``BadInput`` when the root has no
    snapshot, or a tenant / snapshot is not there."""
    import duckdb

    from longmem_etl.report.figures import pick, tenant_figures
    from longmem_etl.report.migrations import find_migrations
    from longmem_etl.snapshots import sanitize_tenant
    from longmem_etl.transforms.sqlparts import register
    from longmem_etl.warehouse import connect, discover, one_line

    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"--root {root}: no such directory")
    if stale_days < 0 or top < 1:
        raise BadInput("--stale-days must be >= 0 and --top >= 1")
    entries = discover(root)
    if not entries:
        raise BadInput(f"--root {root}: no snapshot under it (expected tenant=*/snapshot=*/)")
    names = sorted({e.tenant for e in entries})
    wanted = [sanitize_tenant(t) for t in tenants] if tenants else names
    wanted = list(dict.fromkeys(wanted))
    if snapshot is not None and len(wanted) != 1:
        raise BadInput("--snapshot needs exactly one --tenant (snapshot names differ per tenant)")
    picks = [pick(entries, t, snapshot) for t in wanted]  # all BadInput before any work
    migrations = find_migrations(root, migration_dirs, migration_roots)
    report = Report(
        root=str(root.resolve()),
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        stale_days=stale_days,
    )
    try:
        con = connect(root)  # the views read each file's Parquet footer: damage shows here
    except duckdb.Error as exc:
        raise BadInput(f"--root {root}: cannot read a snapshot ({one_line(exc)})") from None
    try:
        con.execute("SET enable_progress_bar = false")  # DuckDB's bar would go to stdout (--json)
        # the report's goal is <= 1 GB peak at 1M memories: DuckDB spills past this instead
        con.execute(f"SET memory_limit = '{memory_limit_mb}MB'")
        con.execute("SET preserve_insertion_order = false")  # every figure query sorts itself
        register(con)
        for chosen, previous in picks:
            try:
                figures = tenant_figures(
                    con,
                    chosen,
                    previous,
                    migrations=migrations.get(chosen.tenant, []),
                    stale_days=stale_days,
                    top=top,
                )
            except duckdb.Error as exc:  # a damaged or vanished snapshot file: name it, no trace
                raise BadInput(f"{chosen.path}: cannot read ({one_line(exc)})") from None
            report.tenants.append(figures)
    finally:
        con.close()
    return report


def write_report(report: Report, out: str | os.PathLike) -> Path:
    """Render ``report`` to one self-contained HTML file at ``out``, atomically."""
    from longmem_etl.report.render import render_html

    out = Path(out)
    html = render_html(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(html)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


__all__ = ["Report", "build_report", "write_report"]

"""Check a whole root of snapshots before a restore needs them (``longmem-etl check``, Dagster).

For every committed snapshot: ``integrity.check_snapshot`` (manifest and its own checksum, file
names, sizes, Parquet footers and row counts; with ``read_data`` the sha256 of that share of the
files). Per tenant: the newest snapshot that passed, and, with ``max_age``, whether it is older than
that (stale). Debris is listed, not counted as damage: ``.tmp-*`` dirs under the root (abandoned
when their writer is gone), ``snapshot=*`` dirs without a manifest (a killed writer or a half
copy), and files inside a snapshot that its manifest does not list (an upload or copy leftover).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from longmem_etl.errors import BadInput
from longmem_etl.snapshots.integrity import MANIFEST, Problem, check_snapshot, is_sealed
from longmem_etl.snapshots.layout import TENANT_PREFIX, list_snapshots, snapshot_time

_DURATION = re.compile(r"(\d+)([smhdwy])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``, ``2w``, ``1y``, or combined (``1d12h``); BadInput otherwise."""
    s = str(text).strip().lower()
    parts = _DURATION.findall(s)
    if not s or not parts or "".join(n + u for n, u in parts) != s:
        raise BadInput(
            f"{text!r}: not a duration (use a number and a unit s/m/h/d/w/y, e.g. 36h or 1d12h)"
        )
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


@dataclass
class SnapshotStatus:
    tenant: str
    path: Path
    problems: list[Problem]
    sealed: bool
    extra_files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class TenantStatus:
    tenant: str
    snapshots: int
    damaged: int
    newest_verified: str | None
    newest_verified_at: datetime | None
    stale: bool


@dataclass
class CheckReport:
    root: Path
    snapshots: list[SnapshotStatus]
    tenants: list[TenantStatus]
    debris: list[dict[str, Any]]
    read_data: float
    max_age: timedelta | None

    @property
    def healthy(self) -> bool:
        return all(s.ok for s in self.snapshots) and not any(t.stale for t in self.tenants)

    @property
    def exit_code(self) -> int:
        return 0 if self.healthy else 3

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "healthy": self.healthy,
            "read_data": self.read_data,
            "max_age_seconds": self.max_age.total_seconds() if self.max_age else None,
            "snapshots": [
                {
                    "tenant": s.tenant,
                    "path": str(s.path),
                    "ok": s.ok,
                    "sealed": s.sealed,
                    "problems": [p.to_json() for p in s.problems],
                    "unlisted_files": s.extra_files,
                }
                for s in self.snapshots
            ],
            "tenants": [
                {
                    "tenant": t.tenant,
                    "snapshots": t.snapshots,
                    "damaged": t.damaged,
                    "newest_verified": t.newest_verified,
                    "newest_verified_at": t.newest_verified_at.isoformat()
                    if t.newest_verified_at
                    else None,
                    "stale": t.stale,
                }
                for t in self.tenants
            ],
            "debris": self.debris,
        }


def _tenant_of(snap: Path) -> str:
    return snap.parent.name.removeprefix(TENANT_PREFIX)


def _debris(root: Path, tenant_dirs: list[Path]) -> list[dict[str, Any]]:
    from longmem_etl.snapshots.temps import owner_alive

    found: list[dict[str, Any]] = []
    for tmp in sorted(root.glob(".tmp-*")):
        alive = owner_alive(tmp) if tmp.is_dir() else None
        state = "in use" if alive else "abandoned"
        found.append({"path": str(tmp), "kind": "temp", "state": state})
    for tdir in tenant_dirs:
        for child in sorted(tdir.iterdir()) if tdir.is_dir() else []:
            if child.name.startswith("snapshot=") and not (child / MANIFEST).is_file():
                found.append(
                    {"path": str(child), "kind": "incomplete snapshot", "state": "abandoned"}
                )
            elif not child.name.startswith("snapshot="):
                found.append({"path": str(child), "kind": "stray", "state": "unknown"})
    return found


def check_root(
    root: str | os.PathLike,
    *,
    tenant: str | None = None,
    read_data: float = 0.0,
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> CheckReport:
    """Check every snapshot under ``root`` (or one tenant's); see the module doc.

    BadInput when ``root`` is not a directory, or ``tenant`` has no snapshots directory there.
    """
    rootp = Path(root)
    if not rootp.exists():
        raise BadInput(f"{root}: no such directory")
    if not rootp.is_dir():
        raise BadInput(f"{root}: not a directory")
    if not 0.0 <= read_data <= 1.0:
        raise BadInput(f"read-data share must be between 0% and 100% (got {read_data * 100:g}%)")
    snaps = list_snapshots(rootp, tenant)
    if tenant is not None:
        tenant_dirs = sorted({p.parent for p in snaps})
        if not snaps:
            raise BadInput(f"{root}: no snapshots of tenant {tenant!r}")
    else:
        tenant_dirs = sorted(p for p in rootp.glob(f"{TENANT_PREFIX}*") if p.is_dir())
    statuses: list[SnapshotStatus] = []
    for snap in snaps:
        problems = check_snapshot(snap, read_data=read_data)
        sealed, extra = False, []
        if not any(p.file == MANIFEST for p in problems):
            from longmem_etl import jsonio

            manifest = jsonio.loads((snap / MANIFEST).read_bytes())
            sealed = is_sealed(manifest)
            listed = set(manifest.get("files", {})) | {MANIFEST}
            extra = sorted(c.name for c in snap.iterdir() if c.name not in listed)
        statuses.append(SnapshotStatus(_tenant_of(snap), snap, problems, sealed, extra))
    now = now or datetime.now(timezone.utc)
    tenants: list[TenantStatus] = []
    for name in sorted(
        {s.tenant for s in statuses} | {d.name.removeprefix(TENANT_PREFIX) for d in tenant_dirs}
    ):
        mine = [s for s in statuses if s.tenant == name]
        good = [s for s in mine if s.ok]
        newest = good[-1] if good else None
        when = snapshot_time(newest.path) if newest else None
        stale = max_age is not None and (when is None or now - when > max_age)
        tenants.append(
            TenantStatus(
                tenant=name,
                snapshots=len(mine),
                damaged=len(mine) - len(good),
                newest_verified=str(newest.path) if newest else None,
                newest_verified_at=when,
                stale=stale,
            )
        )
    return CheckReport(
        root=rootp,
        snapshots=statuses,
        tenants=tenants,
        debris=_debris(rootp, tenant_dirs),
        read_data=read_data,
        max_age=max_age,
    )


__all__ = ["CheckReport", "SnapshotStatus", "TenantStatus", "check_root", "parse_duration"]

"""Where snapshots live: ``ROOT/tenant=<tenant>/snapshot=<UTC yyyymmddThhmmssZ>/`` (`docs/snapshots.md`).

The snapshot name is the UTC second the snapshot was *committed*. When that directory already
exists (two snapshots of one tenant in the same second) the writer takes the next free second, so
names stay sortable, unique and in commit order. Temp dirs are ``ROOT/.tmp-*`` and never match the
``tenant=*/snapshot=*`` glob the warehouse and ``list_snapshots`` use.
"""

from __future__ import annotations

import os
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

TENANT_PREFIX = "tenant="
SNAPSHOT_PREFIX = "snapshot="
SNAPSHOT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_SNAPSHOT_RE = re.compile(r"^snapshot=(\d{8}T\d{6}Z)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


def sanitize_tenant(name: str) -> str:
    """A tenant name safe as one path segment (and in a hive partition value).

    Letters, digits and ``. _ @ + -`` are kept; every other run becomes ``_``; never empty, never
    ``.``/``..``, at most 100 characters.
    """
    text = unicodedata.normalize("NFKC", str(name)).strip()
    text = _UNSAFE.sub("_", text).strip("_")
    text = text.lstrip(".") or ""
    text = text[:100]
    return text or "default"


def tenant_from_header(header: dict[str, Any]) -> str | None:
    """The dump's tenant: a string, or an object's ``id``/``slug``/``name`` (first string found)."""
    t = header.get("tenant")
    if isinstance(t, str) and t.strip():
        return t
    if isinstance(t, dict):
        for key in ("id", "slug", "name"):
            v = t.get(key)
            if isinstance(v, str) and v.strip():
                return v
            if isinstance(v, int) and not isinstance(v, bool):
                return str(v)
    if isinstance(t, int) and not isinstance(t, bool):
        return str(t)
    return None


def snapshot_name(when: datetime) -> str:
    return SNAPSHOT_PREFIX + when.astimezone(timezone.utc).strftime(SNAPSHOT_TIME_FORMAT)


def snapshot_time(path: str | os.PathLike) -> datetime | None:
    """The UTC time in a snapshot directory's name, or None if it is not named like one."""
    m = _SNAPSHOT_RE.match(Path(path).name)
    if not m:
        return None
    return datetime.strptime(m.group(1), SNAPSHOT_TIME_FORMAT).replace(tzinfo=timezone.utc)


def tenant_dir(root: str | os.PathLike, tenant: str) -> Path:
    return Path(root) / f"{TENANT_PREFIX}{sanitize_tenant(tenant)}"


def next_free_snapshot_dir(root: str | os.PathLike, tenant: str, when: datetime) -> Path:
    """The first ``snapshot=`` dir at or after ``when`` (by whole seconds) that does not exist."""
    base = tenant_dir(root, tenant)
    t = when.astimezone(timezone.utc).replace(microsecond=0)
    while (base / snapshot_name(t)).exists():
        t += timedelta(seconds=1)
    return base / snapshot_name(t)


def list_snapshots(root: str | os.PathLike, tenant: str | None = None) -> list[Path]:
    """Committed snapshot dirs (with a manifest) under ``root``, oldest first (per name, then tenant).

    With ``tenant`` only that tenant's; sorting is by snapshot time, so across tenants the list is
    interleaved in time order.
    """
    rootp = Path(root)
    if not rootp.is_dir():
        return []
    if tenant is not None:
        tenants = [tenant_dir(rootp, tenant)]
    else:
        tenants = sorted(p for p in rootp.glob(f"{TENANT_PREFIX}*") if p.is_dir())
    found: list[Path] = []
    for tdir in tenants:
        if not tdir.is_dir():
            continue
        for snap in tdir.iterdir():
            if _SNAPSHOT_RE.match(snap.name) and (snap / "manifest.json").is_file():
                found.append(snap)
    return sorted(found, key=lambda p: (p.name, p.parent.name))


def latest_snapshot(root: str | os.PathLike, tenant: str) -> Path | None:
    """The newest committed snapshot of ``tenant`` under ``root``, or None."""
    snaps = list_snapshots(root, tenant)
    return snaps[-1] if snaps else None

"""Where snapshots live: ``ROOT/tenant=<encoded tenant>/snapshot=<UTC yyyymmddThhmmssZ>/``
(`docs/snapshots.md`).

**Tenant names are identities.** The exact name is recorded in each snapshot's manifest
(``tenant``) and is what every lookup, the warehouse and retention compare; the folder only has to
be *a* safe, collision-free place for it. :func:`encode_tenant` makes the folder value with
Hive-style percent encoding (``%XX`` of the UTF-8 bytes, uppercase hex), keeping only ``a-z``,
``0-9`` and ``. _ - @ +`` as they are. Uppercase ASCII letters are encoded too (``Acme`` becomes
``%41cme``), so two names never map to folders that differ only in case, and a case-insensitive
filesystem (macOS, Windows) keeps ``Acme`` and ``acme`` apart; all folder names are pure ASCII, so
Unicode normalisation by the filesystem cannot merge them either. A trailing ``.`` is encoded
(Windows drops it). An encoding longer than ``MAX_ENCODED`` is cut (never inside an escape) and
suffixed with ``~`` and 16 hex digits of the name's sha256, which keeps it bounded and distinct
(``~`` is always encoded in a name, so it marks the suffix unambiguously).

**Older snapshots** were written under ``tenant=<sanitised name>`` (every run of characters outside
``[A-Za-z0-9._@+-]`` became ``_``), with that sanitised name in the manifest. They stay readable:
a snapshot's tenant is always its manifest's ``tenant`` (:func:`snapshot_tenant`), and
:func:`list_snapshots` for a tenant also looks in that tenant's legacy folder, keeping only
snapshots whose manifest names it exactly.

**Snapshot names.** A snapshot is named after the instant its data describes: a converted dump's
``exported_at`` when it has one, else the time the backup exported (or the commit time for derived
snapshots). When the name is taken the next free second is used, so names stay sortable and unique.
Temp dirs are ``ROOT/.tmp-*`` and never match the ``tenant=*/snapshot=*`` layout.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from longmem_etl.errors import BadInput
from longmem_etl.names import tenant_name

TENANT_PREFIX = "tenant="
SNAPSHOT_PREFIX = "snapshot="
SNAPSHOT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_ENCODED = 120
_HASHED_KEEP = 100
_SNAPSHOT_RE = re.compile(r"^snapshot=(\d{8}T\d{6}Z)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")
_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._-@+")
TOOL_NAME = "longmem-etl"
# ROOT/.forget.lock: held by a `forget` for its whole run, and by a migration while it registers
# a snapshot of the root as its source (`retention.forget_lock`, `migrate.inuse.holding`)
FORGET_LOCK = ".forget.lock"


def check_tenant(name: Any) -> str:
    """``name`` as a tenant identity, or BadInput: a non-empty string that is valid Unicode.

    Nothing else is refused or changed: spaces, slashes, dots, case and any script are part of
    the name."""
    if not isinstance(name, str) or name == "":
        raise BadInput(f"tenant name {name!r}: must be a non-empty string")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"tenant name {name!r}: not valid Unicode (undecodable bytes)") from None
    return name


def encode_tenant(name: str) -> str:
    """The folder value for tenant ``name`` (after ``tenant=``): reversible, collision-free, ASCII,
    case-insensitive-safe, at most ``MAX_ENCODED`` characters (see the module doc)."""
    raw = check_tenant(name).encode("utf-8")
    parts = [chr(b) if b in _KEEP else f"%{b:02X}" for b in raw]
    if parts[-1] == ".":
        parts[-1] = "%2E"
    encoded = "".join(parts)
    if len(encoded) <= MAX_ENCODED:
        return encoded
    cut, size = [], 0
    for p in parts:  # whole escapes only
        if size + len(p) > _HASHED_KEEP:
            break
        cut.append(p)
        size += len(p)
    return "".join(cut) + "~" + hashlib.sha256(raw).hexdigest()[:16]


def decode_tenant(value: str) -> str | None:
    """The tenant name a folder value spells, or None when it is a hashed (shortened) one, whose
    exact name only the manifest knows."""
    if "~" in value:
        return None
    return unquote(value, errors="surrogateescape")


def sanitize_tenant(name: str) -> str:
    """The *old* folder value of a tenant (lossy; kept to find snapshots written before the
    percent encoding). Letters, digits and ``. _ @ + -`` kept, other runs ``_``; never empty."""
    text = unicodedata.normalize("NFKC", str(name)).strip()
    text = _UNSAFE.sub("_", text).strip("_")
    text = text.lstrip(".") or ""
    text = text[:100]
    return text or "default"


def tenant_from_header(header: dict[str, Any]) -> str | None:
    """The dump's tenant: a string, or an object's ``id``/``slug``/``name`` (``names.tenant_name``)."""
    return tenant_name(header.get("tenant"))


def snapshot_name(when: datetime) -> str:
    return SNAPSHOT_PREFIX + when.astimezone(timezone.utc).strftime(SNAPSHOT_TIME_FORMAT)


def snapshot_time(path: str | os.PathLike) -> datetime | None:
    """The UTC time in a snapshot directory's name, or None if it is not named like one."""
    m = _SNAPSHOT_RE.match(Path(path).name)
    if not m:
        return None
    return datetime.strptime(m.group(1), SNAPSHOT_TIME_FORMAT).replace(tzinfo=timezone.utc)


def parse_instant(value: Any) -> datetime | None:
    """An ISO-8601 timestamp (``Z`` or offset; none means UTC) as an aware datetime, else None
    (the one parser, ``timestamps.to_datetime``, so a name is read as the dump reader reads it)."""
    from longmem_etl.timestamps import to_datetime

    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return to_datetime(value)
    except (ValueError, OverflowError):
        return None


def tenant_dir(root: str | os.PathLike, tenant: str) -> Path:
    """``ROOT/tenant=<encode_tenant(tenant)>``: where new snapshots of ``tenant`` go."""
    return Path(root) / f"{TENANT_PREFIX}{encode_tenant(tenant)}"


def legacy_tenant_dir(root: str | os.PathLike, tenant: str) -> Path:
    """Where a version before the percent encoding put ``tenant``'s snapshots."""
    return Path(root) / f"{TENANT_PREFIX}{sanitize_tenant(tenant)}"


def snapshot_tenant(snap: str | os.PathLike, manifest: dict[str, Any] | None = None) -> str:
    """The exact tenant of a snapshot dir: its manifest's ``tenant``; the folder's decoding only
    when the manifest cannot say (unreadable, or no name recorded)."""
    snap = Path(snap)
    if manifest is None:
        from longmem_etl.snapshots.manifest import read_manifest

        with contextlib.suppress(BadInput, OSError):
            manifest = read_manifest(snap)
    name = (manifest or {}).get("tenant")
    if isinstance(name, str) and name:
        return name
    value = snap.parent.name.removeprefix(TENANT_PREFIX)
    return decode_tenant(value) or value


def next_free_snapshot_dir(root: str | os.PathLike, tenant: str, when: datetime) -> Path:
    """The first ``snapshot=`` dir at or after ``when`` (by whole seconds) that does not exist."""
    base = tenant_dir(root, tenant)
    t = when.astimezone(timezone.utc).replace(microsecond=0)
    while (base / snapshot_name(t)).exists():
        t += timedelta(seconds=1)
    return base / snapshot_name(t)


def _snapshot_dirs(tdir: Path) -> list[Path]:
    if not tdir.is_dir():
        return []
    return [
        s for s in tdir.iterdir() if _SNAPSHOT_RE.match(s.name) and (s / "manifest.json").is_file()
    ]


def list_snapshots(root: str | os.PathLike, tenant: str | None = None) -> list[Path]:
    """Committed snapshot dirs (with a manifest) under ``root``, oldest first (per name, then tenant).

    With ``tenant`` only the snapshots whose manifest names exactly that tenant: in its folder and
    in its pre-encoding (legacy) folder. Sorting is by snapshot time, so across tenants the list is
    interleaved in time order.
    """
    rootp = Path(root)
    if not rootp.is_dir():
        return []
    found: list[Path] = []
    if tenant is None:
        for tdir in sorted(p for p in rootp.glob(f"{TENANT_PREFIX}*") if p.is_dir()):
            found.extend(_snapshot_dirs(tdir))
    else:
        seen: set[tuple[int, int]] = set()
        for tdir in (tenant_dir(rootp, tenant), legacy_tenant_dir(rootp, tenant)):
            try:
                st = tdir.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:  # the same folder (same name, or a case-folding FS)
                continue
            seen.add((st.st_dev, st.st_ino))
            found.extend(s for s in _snapshot_dirs(tdir) if snapshot_tenant(s) == tenant)
    return sorted(found, key=lambda p: (p.name, p.parent.name))


def latest_snapshot(root: str | os.PathLike, tenant: str) -> Path | None:
    """The newest committed snapshot of ``tenant`` under ``root``, or None."""
    snaps = list_snapshots(root, tenant)
    return snaps[-1] if snaps else None


@contextlib.contextmanager
def tenant_lock(root: str | os.PathLike, tenant: str) -> Iterator[Path]:
    """(Context) an exclusive ``flock`` on the tenant's folder (created if missing), held by
    committing writers and by retention so that "is this dump already here?" and "which snapshots
    are the newest N?" are answered and acted on without another process in between. The lock is
    on the directory itself (no lock file to leave behind) and dies with the process."""
    tdir = tenant_dir(root, tenant)
    try:
        tdir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInput(f"{tdir}: exists and is not a directory; move it out of the way") from None
    if not tdir.is_dir():
        raise BadInput(f"{tdir}: exists and is not a directory; move it out of the way")
    fd = os.open(tdir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tdir
    finally:
        os.close(fd)

"""Retention: which snapshots of a tenant to keep, by restic's ``forget --keep-*`` rules, and
removing the rest safely.

The rules (restic's, so a policy means the same thing here as in restic's docs):

- Snapshots are grouped per tenant and walked newest first. Times are the snapshot names' UTC
  seconds; every bucket is computed in UTC.
- ``--keep-last N`` keeps the N newest. ``--keep-hourly/daily/weekly/monthly/yearly N`` keep the
  newest snapshot of each of the N newest hours / days / ISO weeks / months / years that *have* a
  snapshot (empty periods do not count). ``-1`` means unlimited.
- When a bucket rule still has counts left after the walk (fewer periods than N), the oldest
  snapshot is kept too: that maximises the history the rule was asked to keep (restic >= 0.17).
- ``--keep-within DURATION`` (``1y5m7d2h``: years, months, days, hours) keeps every snapshot newer
  than the newest snapshot minus the duration (calendar arithmetic, Go's ``AddDate`` normalisation).
- A snapshot is kept when *any* rule keeps it (union); every reason is reported.
- On top of restic: the newest *verified* snapshot of a tenant (manifest readable, every file present
  with its size and sha256) is never removed. If the policy would keep only unverified snapshots,
  the newest verified one is kept as well, with reason ``only verified snapshot``.

Removing a snapshot (``remove_snapshot``): the manifest is renamed to ``.forgetting-manifest.json``
first (one atomic step after which no reader lists the snapshot), then exactly the files that manifest
names are deleted, then the marker and the directory (only if empty: a foreign file stops there and is
reported). A killed ``forget`` leaves the marker behind; the next ``forget`` on that tenant finishes
the job (``finish_interrupted``). One ``forget`` runs per root at a time (``forget_lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longmem_etl.errors import BadInput, Incomplete
from longmem_etl.snapshots.layout import FORGET_LOCK

if TYPE_CHECKING:
    from longmem_etl.migrate.inuse import Use

LOCK_WAIT_S = 120.0
FORGET_MARKER = ".forgetting-manifest.json"
UNLIMITED = -1
BUCKET_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$")


@dataclass(frozen=True)
class Within:
    """A restic duration: whole years, months, days and hours (``1y5m7d2h``)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __str__(self) -> str:
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{u}" for n, u in parts if n) or "0h"

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)


def parse_within(text: str) -> Within:
    """``1y5m7d2h`` (any subset, in that order) -> ``Within``; BadInput naming the flag otherwise."""
    m = _DURATION_RE.match(str(text).strip())
    if not m or not any(m.groups()):
        raise BadInput(
            f"--keep-within {text!r}: not a duration; write years/months/days/hours in that "
            "order, e.g. 7d, 36h, 1y6m"
        )
    y, mo, d, h = (int(g) if g else 0 for g in m.groups())
    return Within(y, mo, d, h)


def add_date(t: datetime, years: int, months: int, days: int) -> datetime:
    """Go's ``time.AddDate``: add to the fields, then normalise (Mar 31 - 1 month = Mar 3)."""
    month0 = t.month - 1 + months
    year = t.year + years + month0 // 12
    month = month0 % 12 + 1
    first = t.replace(year=year, month=month, day=1)
    return first + timedelta(days=t.day - 1 + days)


@dataclass(frozen=True)
class Policy:
    """A retention policy. Counts: 0 = rule off, -1 = unlimited."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Within | None = None

    def __post_init__(self) -> None:
        for name in BUCKET_RULES:
            n = getattr(self, name)
            if not isinstance(n, int) or isinstance(n, bool) or n < UNLIMITED:
                raise BadInput(f"--keep-{name} {n!r}: must be a count >= 0, or -1 for unlimited")

    @property
    def empty(self) -> bool:
        return all(getattr(self, n) == 0 for n in BUCKET_RULES) and (
            self.within is None or self.within.zero
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {n: getattr(self, n) for n in BUCKET_RULES if getattr(self, n)}
        if self.within is not None and not self.within.zero:
            out["within"] = str(self.within)
        return out

    @classmethod
    def from_mapping(cls, d: dict[str, Any]) -> Policy:
        """From ``{"last": 1, "daily": 7, "within": "30d", ...}`` (Dagster config, JSON)."""
        unknown = set(d) - set(BUCKET_RULES) - {"within"}
        if unknown:
            raise BadInput(f"retention policy: unknown rule(s) {', '.join(sorted(unknown))}")
        within = d.get("within")
        return cls(
            **{n: int(d.get(n) or 0) for n in BUCKET_RULES},
            within=parse_within(within) if within else None,
        )


def parse_policy(text: str) -> Policy:
    """``daily=7,weekly=4,within=30d`` (also ``keep-daily=7``) -> ``Policy``; BadInput naming the
    bad part. How a policy is written in one environment variable or config string."""
    rules: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().removeprefix("keep-").removeprefix("keep_")
        if not sep:
            raise BadInput(f"retention {text!r}: {part!r} is not RULE=VALUE")
        if name == "within":
            rules[name] = value.strip()
            continue
        try:
            rules[name] = UNLIMITED if value.strip() == "unlimited" else int(value)
        except ValueError:
            raise BadInput(f"retention {text!r}: {part!r} needs a count") from None
    return Policy.from_mapping(rules)


def _buckers() -> dict[str, Callable[[datetime, int], int]]:
    def week(t: datetime, _: int) -> int:
        y, w, _d = t.isocalendar()
        return y * 100 + w

    return {
        "last": lambda _t, nr: nr,
        "hourly": lambda t, _: ((t.year * 100 + t.month) * 100 + t.day) * 100 + t.hour,
        "daily": lambda t, _: (t.year * 100 + t.month) * 100 + t.day,
        "weekly": week,
        "monthly": lambda t, _: t.year * 100 + t.month,
        "yearly": lambda t, _: t.year,
    }


def apply_policy(times: Sequence[datetime], policy: Policy) -> dict[int, list[str]]:
    """Which of ``times`` (one tenant's snapshot times, any order) the policy keeps.

    Returns ``{index into times: [reasons]}`` for the kept ones. Pure: no files are read."""
    if policy.empty:
        raise BadInput(
            "no retention rule given (--keep-last/-hourly/-daily/-weekly/-monthly/-yearly/"
            "-within); refusing to forget everything"
        )
    utc = [t.astimezone(timezone.utc) for t in times]
    order = sorted(range(len(utc)), key=lambda i: utc[i], reverse=True)  # newest first
    if not order:
        return {}
    buckers = _buckers()
    counts = {n: getattr(policy, n) for n in BUCKET_RULES}
    last_val: dict[str, int | None] = {n: None for n in BUCKET_RULES}
    cutoff = None
    if policy.within is not None and not policy.within.zero:
        w = policy.within
        newest = utc[order[0]]
        cutoff = add_date(newest, -w.years, -w.months, -w.days) - timedelta(hours=w.hours)
    kept: dict[int, list[str]] = {}
    for nr, i in enumerate(order):
        t = utc[i]
        reasons: list[str] = []
        if cutoff is not None and t > cutoff:
            reasons.append(f"within {policy.within}")
        for name in BUCKET_RULES:
            if counts[name] == 0:
                continue
            val = buckers[name](t, nr)
            if val != last_val[name] or nr == len(order) - 1:
                reasons.append(
                    "last snapshot"
                    if name == "last"
                    else f"{name} snapshot" + (" (oldest)" if val == last_val[name] else "")
                )
                last_val[name] = val
                if counts[name] > 0:
                    counts[name] -= 1
        if reasons:
            kept[i] = reasons
    return kept


# -- on disk ---------------------------------------------------------------------------------------


def is_verified(snapshot: Path) -> bool:
    """Intact by ``check``'s own rules (``snapshots.integrity.check_snapshot`` with every file's
    sha256): manifest and its checksum, safe names, sizes, Parquet row counts, bytes."""
    from longmem_etl.snapshots.integrity import check_snapshot

    try:
        return not check_snapshot(snapshot, read_data=1.0)
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _listed_files(snapshot: Path, manifest_path: Path) -> list[Path]:
    """The files a manifest names, as paths strictly inside the snapshot dir (a tampered
    ``../x`` entry is never followed)."""
    from longmem_etl import jsonio

    try:
        manifest = jsonio.loads(manifest_path.read_bytes())
    except Exception:
        return []
    files = manifest.get("files") if isinstance(manifest, dict) else None
    out = []
    for name in files or {}:
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            continue
        out.append(snapshot / name)
    return out


def _finish_removal(snapshot: Path) -> bool:
    """Delete the files the ``.forgetting`` manifest names, then it, then the dir if empty."""
    marker = snapshot / FORGET_MARKER
    for f in _listed_files(snapshot, marker):
        f.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    try:
        snapshot.rmdir()
    except OSError:
        return False  # a file we did not make: left in place, reported
    _fsync_dir(snapshot.parent)
    return True


def remove_snapshot(snapshot: Path) -> str:
    """Remove one committed snapshot: manifest away first (readers stop seeing it), then its files.

    Returns ``"removed"``; ``"gone"`` when someone else removed it first; ``"left"`` when the
    directory also held files the tool did not make (they stay; the snapshot is gone);
    ``"unreadable"`` when its manifest cannot be read, so which files are ours is unknown, and
    ``"foreign"`` when the manifest does not name this tool as its writer: then nothing is touched. Raises OSError on a real failure."""
    manifest = snapshot / "manifest.json"
    if not manifest.exists():
        return "gone"
    if not _listed_files(snapshot, manifest) and _manifest_unreadable(manifest):
        return "unreadable"
    if not _written_by_us(manifest):
        return "foreign"
    try:
        os.rename(manifest, snapshot / FORGET_MARKER)
    except FileNotFoundError:
        return "gone"
    _fsync_dir(snapshot)
    return "removed" if _finish_removal(snapshot) else "left"


def _written_by_us(path: Path) -> bool:
    """Whether the manifest names this tool as its writer (retention removes nothing else)."""
    from longmem_etl import jsonio

    try:
        tool = jsonio.loads(path.read_bytes()).get("tool")
    except Exception:
        return False
    return isinstance(tool, dict) and tool.get("name") == "longmem-etl"


def _manifest_unreadable(path: Path) -> bool:
    from longmem_etl import jsonio

    try:
        return not isinstance(jsonio.loads(path.read_bytes()).get("files"), dict)
    except Exception:
        return True


def finish_interrupted(root: Path, tenant: str | None) -> list[str]:
    """Snapshot dirs a killed ``forget`` left half-removed (marker, no manifest): finish them."""
    from longmem_etl.snapshots.layout import TENANT_PREFIX, legacy_tenant_dir, tenant_dir

    rootp = Path(root)
    tdirs = (
        [tenant_dir(rootp, tenant), legacy_tenant_dir(rootp, tenant)]
        if tenant is not None
        else sorted(p for p in rootp.glob(f"{TENANT_PREFIX}*") if p.is_dir())
    )
    done = []
    for tdir in tdirs:
        for marker in sorted(tdir.glob(f"snapshot=*/{FORGET_MARKER}")):
            snap = marker.parent
            if not (snap / "manifest.json").exists():
                _finish_removal(snap)
                done.append(str(snap))
    return done


@dataclass
class TenantPlan:
    """One tenant's decision: kept snapshots with reasons, and the ones to remove."""

    tenant: str
    keep: list[dict[str, Any]] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    verified_kept: str | None = None
    warning: str | None = None


@dataclass
class ForgetResult:
    policy: dict[str, Any]
    dry_run: bool
    tenants: list[TenantPlan] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    finished_interrupted: list[str] = field(default_factory=list)
    not_removed: list[dict[str, str]] = field(default_factory=list)
    rebased: list[str] = field(default_factory=list)
    stale_holds: list[str] = field(default_factory=list)  # of migrations finished or gone

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, root: str | os.PathLike = "the root", tenant: str | None = None) -> str:
        """What ``longmem-etl forget`` prints on a terminal (``root``/``tenant``: what was asked)."""
        lines = []
        verb = "would remove" if self.dry_run else "removed"
        for t in self.tenants:
            lines.append(f"tenant {t.tenant}: keep {len(t.keep)}, {verb} {len(t.remove)}")
            for k in t.keep:
                lines.append(f"  keep   {Path(k['snapshot']).name}  ({', '.join(k['reasons'])})")
            for s in t.remove:
                lines.append(f"  {'forget' if self.dry_run else 'gone  '} {Path(s).name}")
            if t.warning:
                lines.append(f"  warning: {t.warning}")
        if not self.tenants:
            lines.append(f"no snapshots under {root}" + (f" for {tenant}" if tenant else ""))
        for n in self.not_removed:
            lines.append(f"  note: {Path(n['path']).name}: {n['why']}")
        if self.finished_interrupted:
            lines.append(f"finished {len(self.finished_interrupted)} interrupted removal(s)")
        if self.stale_holds:
            lines.append(f"removed {len(self.stale_holds)} hold(s) of migrations finished or gone")
        return "\n".join(lines)


def _tenants(root: Path, tenant: str | None) -> list[tuple[str, list[Path]]]:
    from longmem_etl.snapshots.layout import list_snapshots, snapshot_tenant

    by: dict[str, list[Path]] = {}
    for snap in list_snapshots(root, tenant):  # grouped by the exact name, from the manifest
        by.setdefault(snapshot_tenant(snap), []).append(snap)
    return sorted(by.items())


def _in_use_reasons(snaps: list[Path], in_use: dict[str, Use]) -> dict[Path, list[str]]:
    """Snapshots an unfinished migration reads (``migrate.inuse``: keyed by resolved path, or by
    ``s3://`` URL for a source mirrored from S3, which a forget on that S3 root matches through
    its own mirror), and the links of their chains."""
    from longmem_etl.snapshots.incremental import chain
    from longmem_etl.storage.staging import to_remote

    by_path = {s.resolve(): s for s in snaps}
    named: dict[str, Path] = {}
    for s in snaps:
        named[str(s.resolve())] = s
        remote = to_remote(str(s))
        if remote != str(s):
            named[remote.rstrip("/")] = s
    out: dict[Path, list[str]] = {}
    for src, use in sorted(in_use.items()):
        snap = named.get(src)
        if snap is None:
            continue
        mid = use.migration_id
        out.setdefault(snap, []).append(use.reason())
        with contextlib.suppress(BadInput, OSError):
            for link, _ in chain(snap)[:-1]:
                if link.resolve() in by_path:
                    out.setdefault(by_path[link.resolve()], []).append(
                        f"chain of migration {mid}'s source"
                    )
    return out


def plan_tenant(
    tenant: str,
    snaps: list[Path],
    policy: Policy,
    *,
    protect: Path | None = None,
    in_use: dict[str, Use] | None = None,
) -> TenantPlan:
    """Apply ``policy`` to one tenant's snapshots and add the verified-snapshot guarantee.
    ``in_use`` (``migrate.inuse.snapshots_in_use``) are kept whatever the policy says."""
    from longmem_etl.snapshots.layout import snapshot_time

    times = [snapshot_time(s) for s in snaps]  # list_snapshots only lists well-named dirs
    kept = apply_policy([t for t in times if t is not None], policy)
    assert len(kept) <= len(snaps) and None not in times
    plan = TenantPlan(tenant=tenant)
    reasons: dict[Path, list[str]] = {snaps[i]: r for i, r in kept.items()}
    if protect is not None:
        for s in snaps:
            if s.resolve() == Path(protect).resolve():
                reasons.setdefault(s, []).append("just written")
    for s, why in _in_use_reasons(snaps, in_use or {}).items():
        reasons.setdefault(s, []).extend(why)
    newest_first = sorted(snaps, key=lambda p: p.name, reverse=True)
    verified = next((s for s in newest_first if s in reasons and is_verified(s)), None)
    if verified is None:
        verified = next((s for s in newest_first if s not in reasons and is_verified(s)), None)
        if verified is not None:
            reasons[verified] = ["only verified snapshot"]
        else:
            plan.warning = "no snapshot of this tenant verifies (sizes and sha256)"
    plan.verified_kept = str(verified) if verified is not None else None
    for s in sorted(snaps, key=lambda p: p.name):
        if s in reasons:
            plan.keep.append({"snapshot": str(s), "reasons": reasons[s]})
        else:
            plan.remove.append(str(s))
    return plan


@contextlib.contextmanager
def forget_lock(root: Path, wait_s: float | None = None) -> Iterator[None]:
    """One ``forget`` per root at a time (``ROOT/.forget.lock``, an flock the kernel drops when the
    holder dies). Two forgets with different policies could otherwise each remove what the other
    keeps and leave a tenant with nothing. A second one waits, then gives up (exit 3)."""
    path = root / FORGET_LOCK
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)  # flock needs no write access
    try:
        deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Incomplete(
                        f"{path}: another forget on this root is still running; try again later"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def forget(
    root: str | os.PathLike,
    policy: Policy,
    *,
    tenant: str | None = None,
    dry_run: bool = False,
    protect: Path | None = None,
) -> ForgetResult:
    """Apply ``policy`` to every tenant under ``root`` (or just ``tenant``); remove the rest unless
    ``dry_run``. ``protect`` (a snapshot just written) is always kept, and so is every snapshot an
    unfinished migration of the state home reads as its source (with its chain): see
    ``migrate.inuse``."""
    from longmem_etl.migrate.inuse import prune_stale_holds, snapshots_in_use
    from longmem_etl.snapshots.layout import tenant_lock

    rootp = Path(root)
    if not rootp.is_dir():
        raise BadInput(f"--root {root}: no such directory")
    if policy.empty:
        apply_policy([], policy)  # raises the one-line refusal
    result = ForgetResult(policy=policy.to_json(), dry_run=dry_run)
    with contextlib.nullcontext() if dry_run else forget_lock(rootp):
        if not dry_run:
            result.finished_interrupted = finish_interrupted(rootp, tenant)
            result.stale_holds = prune_stale_holds(rootp)
        in_use = snapshots_in_use(root=rootp)
        for name, snaps in _tenants(rootp, tenant):
            if dry_run:
                result.tenants.append(
                    plan_tenant(name, snaps, policy, protect=protect, in_use=in_use)
                )
                continue
            # under the tenant's lock, which a writer holds while it stores an increment against
            # a parent: nothing is removed from under a backup in progress
            with tenant_lock(rootp, name):
                _forget_tenant(rootp, name, policy, result, protect=protect, in_use=in_use)
    return result


def _forget_tenant(
    root: Path,
    name: str,
    policy: Policy,
    result: ForgetResult,
    *,
    protect: Path | None,
    in_use: dict[str, Use],
) -> None:
    """Plan and apply ``policy`` for one tenant, under its lock (snapshots listed afresh: a writer
    may have committed one while this forget waited for the lock)."""
    from longmem_etl.snapshots.incremental import rebase_orphans
    from longmem_etl.snapshots.layout import list_snapshots

    snaps = list_snapshots(root, name)
    plan = plan_tenant(name, snaps, policy, protect=protect, in_use=in_use)
    result.tenants.append(plan)
    # a kept increment whose parent goes is first rewritten as a full snapshot
    result.rebased += rebase_orphans(
        [Path(k["snapshot"]) for k in plan.keep], [Path(r) for r in plan.remove]
    )
    for s in plan.remove:
        outcome = remove_snapshot(Path(s))
        if outcome in ("removed", "left"):
            result.removed.append(s)
        if outcome == "left":
            result.not_removed.append(
                {"path": s, "why": "files the tool did not write stay in the directory"}
            )
        elif outcome == "foreign":
            result.not_removed.append(
                {"path": s, "why": "its manifest does not name longmem-etl as the writer"}
            )
        elif outcome == "unreadable":
            result.not_removed.append(
                {"path": s, "why": "unreadable manifest: which files are ours is unknown"}
            )

"""Endpoint -> snapshot: one ``export_account()`` call, or paged for accounts too big for one call,
verified against the source's own counts, plus retention.

Guarantees:

- **Atomic.** Everything goes through ``SnapshotWriter`` (temp dir, manifest last, rename), and every
  check runs *before* the commit, so a failed or interrupted backup leaves no snapshot. A killed
  process can only leave a ``ROOT/.tmp-*`` directory, which ``list_snapshots`` never shows and the
  next writer on that root removes (``snapshots.temps``: only dirs carrying this tool's marker
  whose owner is provably dead; nothing unmarked is ever removed); a backup reports what it swept.
- **Verified.** One-call: per collection, the export's count must equal ``health(collection).total``
  (accepting either reading of ``total``: all memories, or all but archived). Paged: the same counts
  taken before *and* after paging must agree with what was paged, and no id may come twice (offset
  paging over an account that changes meanwhile repeats or skips rows: the backup then fails rather
  than be silently wrong). Sources without ``health`` are verified by what they offer.
- **Bounded memory** in paged mode: pages are normalised and written in batches as they come.
- **No secrets**: the manifest's ``source`` is the endpoint identity (path, or base URL + key
  fingerprint).

Paged and one-call backups hold the same memories; the paged one's collection list is what
``collections()`` returns and its header only ``tenant`` and ``exported_at``, and its rows are in
per-collection list order rather than export order.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from longmem_etl import jsonio
from longmem_etl.api.endpoints import (
    DEFAULT_KEY_ENV,
    classify_source,
    endpoint_identity,
    open_endpoint,
)
from longmem_etl.api.retry import retry_read
from longmem_etl.errors import APIError, BadInput, Incomplete, Unsupported
from longmem_etl.names import collection_names
from longmem_etl.progress import progress as progress_bar
from longmem_etl.snapshots.incremental import Incremental
from longmem_etl.snapshots.temps import clean_stale_temps

DEFAULT_INCREMENTAL = Incremental()

READ_ATTEMPTS = 6
EXPORT_ATTEMPTS = 3
BACKOFF_BASE_S = 0.1
NORMALIZE_BATCH = 5_000


@dataclass
class BackupResult:
    """What a backup produced. ``verification`` says what was checked against the source."""

    path: Path
    tenant: str
    mode: str
    memories: int
    rejected: int
    collections: int
    source: dict[str, Any]
    verification: dict[str, Any] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    cleaned_temps: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    def render(self) -> str:
        """What ``longmem-etl backup`` prints on a terminal."""
        checked = self.verification.get("health_checked_collections")
        human = (
            f"snapshot {self.path}\n"
            f"  tenant {self.tenant}: {self.memories} memories, {self.collections} collections, "
            f"{self.rejected} rejected ({self.mode}, {self.seconds:.1f}s)\n"
            f"  verified: "
            + (
                f"counts of {checked} collections match the source"
                if checked is not None
                else "the source offers no counts; rows accounted for"
            )
        )
        if self.pruned:
            human += f"\n  pruned {len(self.pruned)} older snapshot(s)"
        return human


# -- reads with retries ----------------------------------------------------------------------------


def _read(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A read, retried the way every read is (``api/retry.py``). A backup gives up sooner than a
    migration's reconcile (``READ_ATTEMPTS``): nothing is half-done, it can simply run again."""
    return retry_read(lambda: fn(*args, **kwargs), retries=READ_ATTEMPTS - 1, base=BACKOFF_BASE_S)


def _health_totals(api: Any, names: list[str]) -> dict[str, int] | None:
    """``{collection: health().total}``, or None when the source does not offer health."""
    out: dict[str, int] = {}
    for name in names:
        try:
            h = _read(api.health, collection=name)
        except Unsupported:
            return None
        except APIError as exc:
            if exc.status in (404, 405, 501):
                return None
            raise
        total = h.get("total") if isinstance(h, dict) else None
        if not isinstance(total, int):
            return None
        out[name] = total
    return out


def _count_problems(
    counted: dict[str, tuple[int, int]], totals: dict[str, int] | None, when: str
) -> list[str]:
    """``counted``: {collection: (all, archived)}; a health total may count archived or not."""
    if totals is None:
        return []
    problems = []
    for name in sorted(set(counted) | set(totals)):
        n_all, n_archived = counted.get(name, (0, 0))
        total = totals.get(name)
        if total is None:
            continue
        if total not in (n_all, n_all - n_archived):
            problems.append(f"{name!r}: backed up {n_all}, the source says {total} ({when})")
    return problems


def _counts_by_collection(memories: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = {}
    for m in memories:
        c = m.get("collection") if isinstance(m, dict) else None
        if not isinstance(c, str):
            continue
        slot = counts.setdefault(c, [0, 0])
        slot[0] += 1
        slot[1] += m.get("archived") is True
    return {k: (v[0], v[1]) for k, v in counts.items()}


# -- temp dirs and retention -----------------------------------------------------------------------


@contextlib.contextmanager
def _backup_writer(
    root: Path,
    name: str,
    source: dict[str, Any],
    info: dict[str, Any],
    total: int | None,
    show: bool,
    recipients: list[Any] | None = None,
    incremental: Any = None,
    named_at: datetime | None = None,
):
    """``(writer, bar)``: a snapshot writer and a progress bar over ``total`` memories; the
    snapshot is named after ``named_at``, the moment the export was taken."""
    from longmem_etl.snapshots import SnapshotWriter

    bar = progress_bar(total, desc=f"backup {name}", unit="mem", show=show)
    with (
        bar,
        SnapshotWriter(
            root,
            name,
            source=source,
            extra_manifest={"backup": info},
            named_at=named_at,
            recipients=recipients,
            incremental=incremental,
        ) as writer,
    ):
        yield writer, bar


def _written(writer: Any, verification: dict[str, Any]) -> tuple:
    """What a committed backup writer made: (path, tenant, memories, rejected, collections, checks)."""
    assert writer.path is not None
    counts = writer.counts
    return (
        writer.path,
        writer.tenant,
        counts["memories"],
        counts["rejected"],
        counts["collections"],
        verification,
    )


def prune(
    root: str | os.PathLike,
    tenant: str,
    keep: int | None = None,
    *,
    protect: Path | None = None,
    policy: Any = None,
) -> list[str]:
    """Retention after a backup: ``keep`` N is ``forget --keep-last N``; ``policy`` a full
    ``retention.Policy``. Same code as the ``forget`` verb (``retention.forget``): ``protect`` (the
    snapshot just written) and the newest verified snapshot are never removed."""
    from longmem_etl.retention import Policy, forget

    if keep is not None and keep < 1:
        raise BadInput(f"--keep must be at least 1 (got {keep})")
    if policy is None:
        if keep is None:
            return []
        policy = Policy(last=keep)
    elif keep is not None:
        raise BadInput("give --keep or a retention policy, not both")
    return forget(root, policy, tenant=tenant, protect=protect).removed


# -- the backup ------------------------------------------------------------------------------------


def _source_info(uri: str, key_env: str) -> dict[str, Any]:
    ident = endpoint_identity(uri, key_env)
    display = uri if ident["scheme"] == "local" else ident["base_url"]
    return {"kind": "endpoint", "uri": display, **ident}


def _one_call(
    api: Any,
    root: Path,
    tenant: str | None,
    source: dict[str, Any],
    progress: bool,
    recipients: list[Any] | None = None,
    incremental: Any = None,
):
    from longmem_etl.snapshots import snapshot_from_dump, tenant_from_header

    for attempt in range(EXPORT_ATTEMPTS):
        exported = datetime.now(timezone.utc)  # the backup's export time names the snapshot
        dump = _read(api.export_account)
        if not isinstance(dump, dict) or not isinstance(dump.get("memories"), list):
            raise APIError(502, "export_account did not return {tenant, collections, memories}")
        memories = dump["memories"]
        counted = _counts_by_collection(memories)
        listed = collection_names(dump.get("collections"))
        names = listed + [c for c in counted if c not in listed]
        totals = _health_totals(api, names)
        problems = _count_problems(counted, totals, "one-call export")
        if not problems:
            break
        if attempt == EXPORT_ATTEMPTS - 1:  # a live account may change between export and health
            raise Incomplete(
                f"backup not written: the export disagrees with the source's counts "
                f"({EXPORT_ATTEMPTS} tries): {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
            )
    name = tenant or tenant_from_header(dump) or getattr(api, "tenant", None) or "default"
    verification = {
        "memories_exported": len(memories),
        "health_checked_collections": len(totals) if totals is not None else None,
    }
    result = snapshot_from_dump(
        dump,
        root,
        tenant=name,
        source=source,
        extra_manifest={"backup": {"mode": "export", "verification": verification}},
        recipients=recipients,
        incremental=incremental,
        progress=progress,
        batch_size=NORMALIZE_BATCH,
        named_at=exported,  # the backup's export call names the snapshot
        in_order=True,  # a snapshot of the present sorts after the tenant's newest
        desc="backup",
    )
    if result.memories + result.rejected != len(memories):
        raise Incomplete(  # pragma: no cover - the normalizer accounts for every row
            f"snapshot holds {result.memories}+{result.rejected} rows of {len(memories)}"
        )
    return (
        result.path,
        result.tenant,
        result.memories,
        result.rejected,
        result.collections,
        verification,
    )


def _paged(
    api: Any,
    root: Path,
    tenant: str | None,
    source: dict[str, Any],
    page_size: int,
    progress: bool,
    recipients: list[Any] | None = None,
    incremental: Any = None,
):
    from longmem_etl.dumps.normalize import Normalizer

    started_at = datetime.now(timezone.utc)
    started = started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cols = _read(api.collections)
    if not isinstance(cols, list):
        raise APIError(502, "collections() did not return a list")
    names = collection_names(cols)
    before = _health_totals(api, names)
    name = tenant or getattr(api, "tenant", None) or urlsplit(source.get("base_url", "")).hostname
    name = name or "default"
    norm = Normalizer()
    counted: dict[str, tuple[int, int]] = {}
    pending: list[bytes] = []
    pending_ids: set[str] = set()  # ids not yet in norm.ids: repeats are caught on the page
    start = 0
    duplicates: list[str] = []

    def flush(writer: Any) -> None:
        nonlocal start, pending
        if not pending:
            return
        good, rejected = norm.batch(pending, start)
        if rejected.num_rows:
            for reason, ident in zip(
                rejected.column("reason").to_pylist(),
                rejected.column("id").to_pylist(),
                strict=True,
            ):
                if reason.startswith("duplicate id"):
                    duplicates.append(str(ident))
            writer.write_rejected(rejected)
        writer.write_memories(good)
        start += len(pending)
        pending = []
        pending_ids.clear()

    info = {"mode": "paged", "page_size": page_size}
    total = sum(before.values()) if before else None
    with _backup_writer(
        root,
        name,
        source,
        info,
        total,
        progress,
        recipients,
        incremental,
        named_at=started_at,
    ) as (writer, bar):
        writer.set_header({"tenant": name, "exported_at": started})
        writer.set_collections(cols)
        for coll in names:
            offset = n_all = n_archived = 0
            while True:
                page = _read(
                    api.list_memories,
                    collection=coll,
                    limit=page_size,
                    offset=offset,
                    include_archived=True,
                )
                if not page:
                    break
                idents = [m.get("id") if isinstance(m, dict) else None for m in page]
                strs = [i for i in idents if isinstance(i, str)]
                kept_before = dict(zip(strs, norm.seen(strs).tolist(), strict=True))
                for m, ident in zip(page, idents, strict=True):
                    if isinstance(ident, str):
                        if kept_before[ident] or ident in pending_ids:
                            duplicates.append(ident)
                        pending_ids.add(ident)
                    pending.append(jsonio.dumps(m))
                    n_archived += isinstance(m, dict) and m.get("archived") is True
                n_all += len(page)
                offset += len(page)
                bar.update(len(page))
                if len(pending) >= NORMALIZE_BATCH:
                    flush(writer)
                if duplicates:
                    break
            counted[coll] = (n_all, n_archived)
            if duplicates:
                break
        flush(writer)
        if duplicates:
            raise Incomplete(
                f"backup not written: paging returned memory id {duplicates[0]!r} twice "
                "(the account changed while it was paged, or it holds duplicate ids); "
                "retry, or back up without --paged"
            )
        after = _health_totals(api, names) if before is not None else None
        problems = _count_problems(counted, before, "before paging") + _count_problems(
            counted, after, "after paging"
        )
        if problems:
            raise Incomplete(
                "backup not written: paged memories disagree with the source's counts "
                f"(missed rows, or the account changed meanwhile): {problems[0]}"
            )
        verification = {
            "memories_paged": sum(v[0] for v in counted.values()),
            "collections_paged": len(names),
            "health_checked_collections": len(before) if before is not None else None,
            "duplicate_ids": 0,
        }
    return _written(writer, verification)


def backup(
    source_uri: str,
    root: str | os.PathLike,
    *,
    tenant: str | None = None,
    paged: bool = False,
    keep: int | None = None,
    key_env: str = DEFAULT_KEY_ENV,
    page_size: int = 100,
    progress: bool = False,
    retention: Any = None,
    recipients: list[Any] | None = None,
    incremental: Incremental | None = DEFAULT_INCREMENTAL,
) -> BackupResult:
    """Back up the account behind ``source_uri`` into a new snapshot under ``root``.

    ``recipients`` (``snapshots.crypto.parse_recipients``): age-encrypt the snapshot to them.
    ``incremental``: store only the changes against the tenant's newest verified snapshot (the
    default; ``Incremental(full=True)`` or None writes a full one).

    ``tenant`` overrides the snapshot's tenant (default: the export's tenant, or the local store's).
    ``keep`` prunes older complete snapshots of that tenant after a successful backup (it is
    ``--keep-last``); ``retention`` (a ``retention.Policy``) applies a full policy instead.
    """
    if classify_source(source_uri) != "endpoint":
        raise BadInput(
            f"{source_uri}: backup reads from an endpoint (local:PATH or https://HOST); "
            "to snapshot a dump file use: longmem-etl convert"
        )
    _check_options(root, keep, page_size, retention)
    source = _source_info(source_uri, key_env)
    api = open_endpoint(source_uri, key_env=key_env, create=False)
    try:
        return backup_from(
            api,
            root,
            source=source,
            tenant=tenant,
            paged=paged,
            keep=keep,
            page_size=page_size,
            progress=progress,
            retention=retention,
            recipients=recipients,
            incremental=incremental,
        )
    finally:
        close = getattr(api, "close", None)
        if callable(close):
            close()


def _check_options(
    root: str | os.PathLike, keep: int | None, page_size: int, retention: Any = None
) -> None:
    if keep is not None and keep < 1:
        raise BadInput(f"--keep must be at least 1 (got {keep})")
    if retention is not None and keep is not None:
        raise BadInput("give --keep or a retention policy, not both")
    if page_size < 1:
        raise BadInput(f"--page-size must be at least 1 (got {page_size})")
    if Path(root).exists() and not Path(root).is_dir():
        raise BadInput(f"{root}: not a directory")


def backup_from(
    api: Any,
    root: str | os.PathLike,
    *,
    source: dict[str, Any],
    tenant: str | None = None,
    paged: bool = False,
    keep: int | None = None,
    page_size: int = 100,
    progress: bool = False,
    retention: Any = None,
    recipients: list[Any] | None = None,
    incremental: Incremental | None = DEFAULT_INCREMENTAL,
) -> BackupResult:
    """``backup`` for an already open ``LongmemAPI`` (Dagster resources, tests). ``source`` is what
    the manifest records about it (no secrets: use ``endpoint_identity``)."""
    t0 = time.perf_counter()
    _check_options(root, keep, page_size, retention)
    rootp = Path(root)
    cleaned = clean_stale_temps(rootp)
    if paged:
        path, name, n_mem, n_rej, n_coll, verification = _paged(
            api, rootp, tenant, source, page_size, progress, recipients, incremental
        )
    else:
        path, name, n_mem, n_rej, n_coll, verification = _one_call(
            api, rootp, tenant, source, progress, recipients, incremental
        )
    pruned = prune(rootp, name, keep, protect=path, policy=retention)
    return BackupResult(
        path=path,
        tenant=name,
        mode="paged" if paged else "export",
        memories=n_mem,
        rejected=n_rej,
        collections=n_coll,
        source=source,
        verification=verification,
        pruned=pruned,
        cleaned_temps=cleaned,
        seconds=round(time.perf_counter() - t0, 3),
    )

"""The snapshot commit protocol on an object store, where there is no rename (``docs/s3.md``).

A snapshot is the prefix ``tenant=T/snapshot=TS/``; it exists for readers only once its
``manifest.json`` does. Publishing one:

1. **claim** the prefix: ``.longmem-etl-upload.json`` (host, pid, start time; nothing secret) is
   created with a conditional put, then the writer makes sure no manifest is there (a writer that
   finished and released its claim first): so two writers never upload into the same prefix;
2. upload every data file;
3. create ``manifest.json`` with a conditional put (written last, exactly once);
4. delete the claim.

A writer killed anywhere before 3 leaves a prefix with a claim and no manifest: no reader lists it
(:func:`committed`), and the next writer or ``check`` deletes it (:func:`sweep`) once the claim's
owner is provably gone (same host, dead pid) or the claim is older than ``ABANDONED_AFTER``.

Removing one (retention) mirrors the local ``.forgetting-manifest.json`` rename: the manifest is
copied to ``.forgetting-manifest.json``, the manifest deleted (the snapshot is gone for readers at
that instant), then the data files, then the marker; a removal cut short is finished by the next
sweep. A prefix with neither a manifest, a claim nor a marker is not provably ours and is only
reported, never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from longmem_etl.errors import BadInput
from longmem_etl.storage.store import ObjectInfo, Store

MANIFEST = "manifest.json"
CLAIM = ".longmem-etl-upload.json"
FORGETTING = ".forgetting-manifest.json"
ABANDONED_AFTER = timedelta(hours=6)
_THREADS = 8


@dataclass
class Prefix:
    """The objects under one ``tenant=T/snapshot=TS/`` prefix, by file name."""

    rel: str
    objects: dict[str, ObjectInfo] = field(default_factory=dict)

    @property
    def committed(self) -> bool:
        return MANIFEST in self.objects


def group(objects: Iterable[ObjectInfo]) -> dict[str, Prefix]:
    """Objects of the ``tenant=*/snapshot=*/NAME`` layout grouped by snapshot prefix."""
    out: dict[str, Prefix] = {}
    for obj in objects:
        parts = obj.key.split("/")
        if (
            len(parts) != 3
            or not parts[2]
            or not parts[0].startswith("tenant=")
            or not parts[1].startswith("snapshot=")
        ):
            continue
        rel = f"{parts[0]}/{parts[1]}"
        out.setdefault(rel, Prefix(rel)).objects[parts[2]] = obj
    return out


def committed(groups: dict[str, Prefix]) -> list[str]:
    """The prefixes readers may see: those with a manifest, oldest name first."""
    return sorted(rel for rel, p in groups.items() if p.committed)


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="s3")


# -- reading -----------------------------------------------------------------------------------


def pull(store: Store, groups: dict[str, Prefix], rels: list[str], dest: Path) -> dict[str, bytes]:
    """Mirror the committed snapshots ``rels`` into ``dest`` (same layout); returns each one's
    manifest bytes. A snapshot removed while we copy it is left out (it no longer exists)."""
    jobs = []
    for rel in rels:
        for name in groups[rel].objects:
            if name in (CLAIM, FORGETTING):
                continue
            jobs.append((rel, name))
    missing: set[str] = set()

    def one(job: tuple[str, str]) -> None:
        rel, name = job
        try:
            store.download(f"{rel}/{name}", dest / rel / name)
        except FileNotFoundError:
            missing.add(rel)

    with _pool() as pool:
        list(pool.map(one, jobs))
    out: dict[str, bytes] = {}
    for rel in rels:
        manifest = dest / rel / MANIFEST
        if rel in missing or not manifest.is_file():
            import shutil

            shutil.rmtree(dest / rel, ignore_errors=True)
            continue
        out[rel] = manifest.read_bytes()
    return out


# -- writing -----------------------------------------------------------------------------------


def _claim_body() -> bytes:
    return json.dumps(
        {
            "tool": "longmem-etl",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ).encode()


def publish_snapshot(store: Store, local: Path, rel: str) -> None:
    """Upload the committed local snapshot dir ``local`` as ``rel``: claim, files, manifest last."""
    taken = BadInput(
        f"{store.url_of(rel)}: another writer is uploading or has uploaded this snapshot; "
        "re-run to commit under the next free name"
    )
    if not store.put_if_absent(f"{rel}/{CLAIM}", _claim_body()):
        raise taken
    # A claim only excludes writers that overlap: one that committed and released its claim
    # before ours left a manifest, and its files must not be overwritten.
    if store.exists(f"{rel}/{MANIFEST}"):
        store.delete([f"{rel}/{CLAIM}"])
        raise taken
    names = sorted(p.name for p in local.iterdir() if p.is_file() and p.name != MANIFEST)
    with _pool() as pool:
        list(pool.map(lambda n: store.upload(local / n, f"{rel}/{n}"), names))
    if not store.put_if_absent(f"{rel}/{MANIFEST}", (local / MANIFEST).read_bytes()):
        raise BadInput(f"{store.url_of(rel)}: a manifest appeared meanwhile; re-run")
    store.delete([f"{rel}/{CLAIM}"])


def replace_snapshot(store: Store, local: Path, rel: str, old: Prefix | None) -> None:
    """A committed snapshot rewritten in place (``forget`` rebasing an increment into a full
    snapshot): new files first, then the manifest, then the files it no longer lists, so a reader
    sees the old or the new snapshot whole."""
    names = sorted(p.name for p in local.iterdir() if p.is_file() and p.name != MANIFEST)
    with _pool() as pool:
        list(pool.map(lambda n: store.upload(local / n, f"{rel}/{n}"), names))
    store.write_bytes(f"{rel}/{MANIFEST}", (local / MANIFEST).read_bytes())
    stale = [n for n in (old.objects if old else {}) if n not in names and n != MANIFEST]
    store.delete([f"{rel}/{n}" for n in stale])


def remove_snapshot(store: Store, rel: str, names: Iterable[str]) -> None:
    """Retention on the store: the manifest goes first (via the ``.forgetting`` marker), then the
    data files, then the marker."""
    store.copy(f"{rel}/{MANIFEST}", f"{rel}/{FORGETTING}")
    store.delete([f"{rel}/{MANIFEST}"])
    rest = [n for n in names if n not in (MANIFEST, FORGETTING)]
    with _pool() as pool:
        list(pool.map(lambda n: store.delete([f"{rel}/{n}"]), rest))
    store.delete([f"{rel}/{FORGETTING}"])


# -- debris ------------------------------------------------------------------------------------


def _claim_state(store: Store, prefix: Prefix, now: float, older_than: timedelta) -> str:
    """``abandoned`` (owner gone or too old), ``running`` (may still be uploading)."""
    try:
        claim = json.loads(store.read_bytes(f"{prefix.rel}/{CLAIM}"))
    except (FileNotFoundError, ValueError, BadInput):
        claim = {}
    if isinstance(claim, dict) and claim.get("host") == socket.gethostname():
        pid = claim.get("pid")
        if isinstance(pid, int) and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return "abandoned"
            except PermissionError:
                pass
    newest = max((o.mtime or now for o in prefix.objects.values()), default=now)
    return "abandoned" if now - newest > older_than.total_seconds() else "running"


def debris(
    store: Store, groups: dict[str, Prefix], older_than: timedelta = ABANDONED_AFTER
) -> list[dict[str, str]]:
    """Prefixes without a manifest: abandoned uploads, removals cut short, running uploads and
    objects that are not provably ours."""
    now = time.time()
    out = []
    for rel, p in sorted(groups.items()):
        if p.committed:
            continue
        if FORGETTING in p.objects:
            state, kind = "abandoned", "removal"
        elif CLAIM in p.objects:
            kind = "upload"
            state = _claim_state(store, p, now, older_than)
        else:
            state, kind = "foreign", "unknown"
        out.append({"path": store.url_of(rel), "rel": rel, "kind": kind, "state": state})
    return out


def sweep(
    store: Store, groups: dict[str, Prefix], older_than: timedelta = ABANDONED_AFTER
) -> list[dict[str, str]]:
    """Delete abandoned uploads and finish cut-short removals; returns what was removed. The
    manifest-less prefix is invisible to readers already, so any order of deletion is safe; the
    claim or marker goes last so an interrupted sweep is redone."""
    removed = []
    for d in debris(store, groups, older_than):
        if d["state"] != "abandoned":
            continue
        p = groups[d["rel"]]
        marker = FORGETTING if d["kind"] == "removal" else CLAIM
        with contextlib.suppress(BadInput):
            store.delete([f"{p.rel}/{n}" for n in p.objects if n != marker])
            store.delete([f"{p.rel}/{marker}"])
            removed.append(d)
    return removed


__all__ = [
    "ABANDONED_AFTER",
    "CLAIM",
    "FORGETTING",
    "MANIFEST",
    "Prefix",
    "committed",
    "debris",
    "group",
    "publish_snapshot",
    "pull",
    "remove_snapshot",
    "replace_snapshot",
    "sweep",
]

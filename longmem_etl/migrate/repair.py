"""`verify --repair`: delete extra copies that carry the same source identity, keeping the oldest.

Duplicates from any earlier cause (overlapping runs, journals lost, older versions' bugs) become
fixable as long as the copies carry this source's marker: per ``(source key, source id)`` the copy
with the earliest ``created_at`` (then the smallest id) stays, every other copy is deleted through
the API's ``delete``. Copies without a marker, or with another source's marker, are never touched
(we cannot prove they are ours).

Journaled and resumable: the deletions to make are written first to a SQLite journal under
``{home}/repairs/<repair id>/`` (repair id = source key + target identity); each deletion is
committed when the call returns (a 404 means it is already gone). A killed repair, run again,
finishes the list it made before looking again, but only the entries that are *still* extra copies
in one fresh read of the target: if the copy that was to stay is gone meanwhile (deleted by hand, an
old copy of the journal put back after the target changed), the copy the list named becomes the
one kept and is not deleted (``no_longer_extra``), so a repair never removes a memory's last copy. One repair per target+source at a time (the same
`lock` as migrations). ``dry_run`` only lists the extras: no journal, no call but one read of the target.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.errors import APIError
from longmem_etl.migrate import source as sources
from longmem_etl.migrate.lock import run_lock
from longmem_etl.migrate.reconcile import retrying
from longmem_etl.migrate.state import locks_dir, repairs_dir
from longmem_etl.migrate.targetread import read_target_keys
from longmem_etl.migrate.verify import target_keys

_EXTRAS_SQL = """
SELECT target_id, collection, prov_source_id AS source_id FROM (
    SELECT *, row_number() OVER (PARTITION BY prov_source_id
                                 ORDER BY created_at NULLS LAST, target_id) AS rank
    FROM t WHERE prov_key = $key AND prov_source_id IS NOT NULL AND target_id IS NOT NULL
) WHERE rank > 1 ORDER BY source_id, target_id
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS extras (
    target_id TEXT PRIMARY KEY, collection TEXT, source_id TEXT,
    state TEXT NOT NULL DEFAULT 'planned'
);
"""


@dataclass
class RepairResult:
    source_key: str
    dry_run: bool
    extras: list[dict[str, Any]] = field(default_factory=list)
    deleted: int = 0
    already_gone: int = 0
    resumed: bool = False
    journal: str | None = None
    no_longer_extra: int = 0  # listed by a killed run, now the copy that stays: left alone

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_key": self.source_key,
            "dry_run": self.dry_run,
            "extra_copies": len(self.extras),
            "deleted": self.deleted,
            "already_gone": self.already_gone,
            "resumed": self.resumed,
            "no_longer_extra": self.no_longer_extra,
            "journal": self.journal,
            "extras": self.extras,
        }


def find_extras(memories: list[dict[str, Any]] | pa.Table, source_key: str) -> list[dict[str, Any]]:
    """Every copy beyond the oldest, per source id, among memories carrying ``source_key``.
    ``memories``: exported dicts, or the keys `targetread.read_target_keys` read."""
    keys = memories if isinstance(memories, pa.Table) else target_keys(memories)
    con = duckdb.connect()
    try:
        con.register("t", keys)
        rows = con.execute(_EXTRAS_SQL, {"key": source_key}).fetchall()
    finally:
        con.close()
    return [{"target_id": t, "collection": c, "source_id": s} for t, c, s in rows]


def _read_keys(api: Any, stop: threading.Event | None) -> pa.Table:
    """The target's keys, markers only (the same paged read verification makes)."""
    return read_target_keys(api, fingerprints=False, stop=stop)


def repair_duplicates(
    source: str,
    target: str,
    *,
    copy: str | None = None,
    dry_run: bool = False,
    wait: bool = False,
    source_key_env: str = DEFAULT_KEY_ENV,
    target_key_env: str = DEFAULT_KEY_ENV,
    stop: threading.Event | None = None,
) -> RepairResult:
    """Delete extra copies of ``source``'s memories in ``target`` (see the module docstring)."""
    key = sources.source_key(sources.stable_source_identity(source, key_env=source_key_env), copy)
    target_id = sources.target_identity(target, key_env=target_key_env)
    api = sources.open_target(target, key_env=target_key_env, create=False)
    result = RepairResult(source_key=key, dry_run=dry_run)
    if dry_run:
        result.extras = find_extras(_read_keys(api, stop), key)
        return result
    rid = hashlib.sha256(
        json.dumps({"key": key, "target": target_id}, sort_keys=True).encode()
    ).hexdigest()[:16]
    work = repairs_dir() / rid
    work.mkdir(parents=True, exist_ok=True)
    path = work / "repair.sqlite"
    result.journal = str(path)
    with run_lock(locks_dir() / f"repair-{rid}.lock", what=f"repair {rid}", wait=wait):
        db = sqlite3.connect(str(path), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            pending = db.execute(
                "SELECT target_id, collection, source_id FROM extras WHERE state = 'planned'"
            ).fetchall()
            result.resumed = bool(pending)
            if pending:  # still extra now? (never delete what has become the copy that stays)
                keys = _read_keys(api, stop)
                present = set(keys.column("target_id").to_pylist())
                still = {e["target_id"] for e in find_extras(keys, key)}
                kept = [(p[0],) for p in pending if p[0] in present and p[0] not in still]
                db.executemany("UPDATE extras SET state = 'kept' WHERE target_id = ?", kept)
                result.no_longer_extra = len(kept)
                # gone already (deleted by the killed run): counted as gone below, by a 404
                pending = [p for p in pending if p[0] in still or p[0] not in present]
            if not pending and not result.resumed:
                db.execute("DELETE FROM extras")
                found = find_extras(_read_keys(api, stop), key)
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO extras(target_id, collection, source_id) VALUES (?, ?, ?)",
                    [(e["target_id"], e["collection"], e["source_id"]) for e in found],
                )
                db.execute("COMMIT")
                pending = [(e["target_id"], e["collection"], e["source_id"]) for e in found]
            result.extras = [
                {"target_id": t, "collection": c, "source_id": s} for t, c, s in pending
            ]
            for tid, collection, _sid in pending:
                if stop is not None and stop.is_set():
                    break
                try:
                    retrying(lambda t=tid, c=collection: api.delete(t, collection=c), stop=stop)
                    result.deleted += 1
                except APIError as exc:
                    if exc.status != 404:
                        raise
                    result.already_gone += 1
                db.execute("UPDATE extras SET state = 'deleted' WHERE target_id = ?", (tid,))
        finally:
            db.close()
    return result

"""The migration's checkpoint: a SQLite journal (WAL, synchronous=FULL) that survives any kill.

Tables
- ``migration(k, v)``: the bound identities (source, spec, target, mode), options, the frozen source
  snapshot, ``planned`` once the whole plan is in (the plan is written in one transaction).
- ``chunks(chunk_no, collection, n_items, n_bytes, state, attempts, last_error, updated_at)`` with
  state ``planned -> in_flight -> done | failed -> dead``.
- ``items(source_id, seq, chunk_no, collection, container_tag, fp, nbytes, payload, target_id, state)``
  with state ``planned | done | dead``; ``payload`` is the exact JSON sent, so a resumed run re-sends
  byte-identical items without re-reading the source.
- ``dead_letters(source_id, chunk_no, status, message, at)``.
- ``changed(source_id, target_id, collection, old_content, new_content, state)``: items the target
  already held from an earlier run whose payload now differs (``state`` ``found`` or ``updated``).
- ``repairs``: see `migrate.repair` (its own journal file, same format of rows).

A chunk becomes ``done`` in the same transaction that records its items' target ids, and only after
the target call returned (committed with synchronous=FULL): a kill before that commit leaves it
``in_flight`` or ``planned``, and a resumed run reconciles every unfinished chunk against the target
before re-sending anything. (``in_flight`` marks and error notes are committed with
synchronous=NORMAL: they survive any process kill, and correctness never depends on them.) One connection serves all worker threads
behind a lock; every state change is its own committed transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from longmem_etl.errors import BadInput
from longmem_etl.migrate.plan import DEFAULT_MAX_BYTES, MAX_CHUNK_ITEMS, PlannedItem, assign_chunks
from longmem_etl.secrets import mask, mask_obj

CHUNK_STATES = ("planned", "in_flight", "done", "failed", "dead")
BINDING_KEYS = ("source", "target", "mode")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS migration (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_no INTEGER PRIMARY KEY, collection TEXT NOT NULL, n_items INTEGER NOT NULL,
    n_bytes INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'planned',
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, updated_at REAL
);
CREATE TABLE IF NOT EXISTS items (
    source_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, chunk_no INTEGER,
    collection TEXT NOT NULL, container_tag TEXT, sort_key TEXT, fp TEXT NOT NULL,
    nbytes INTEGER NOT NULL, payload TEXT NOT NULL, target_id TEXT,
    state TEXT NOT NULL DEFAULT 'planned', content TEXT
);
CREATE INDEX IF NOT EXISTS items_chunk ON items(chunk_no, state);
CREATE TABLE IF NOT EXISTS dead_letters (
    source_id TEXT PRIMARY KEY, chunk_no INTEGER, status INTEGER, message TEXT, at REAL
);
CREATE TABLE IF NOT EXISTS changed (
    source_id TEXT PRIMARY KEY, target_id TEXT, collection TEXT, old_content TEXT,
    new_content TEXT, state TEXT NOT NULL DEFAULT 'found'
);
"""


def _now() -> float:
    return time.time()


class ItemRow(NamedTuple):
    """One item of the plan as `Journal.iter_items` gives it (a tuple: unpacking still works)."""

    source_id: str
    target_id: str | None
    collection: str
    container_tag: str | None
    fp: str
    chunk_no: int | None
    state: str


class PendingItem(NamedTuple):
    """An item still to send (`Journal.pending_items`): its exact payload text and fingerprint."""

    source_id: str
    payload: str
    fp: str


class PlannedKey(NamedTuple):
    """What `holdings` needs of a planned item (`Journal.planned_keys`)."""

    source_id: str
    content: str | None
    collection: str
    chunk_no: int


class Journal:
    """Thread-safe handle on one migration's journal file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(items)").fetchall()}
        if "content" not in cols:  # a journal from before content fingerprints
            self._db.execute("ALTER TABLE items ADD COLUMN content TEXT")
        # Workers read their next chunk through a second connection: WAL lets it read while the
        # writer connection is inside a commit's fsync, so uploads never wait on durability.
        self._rlock = threading.Lock()
        self._rdb = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._rlock:
            self._rdb.close()

    def checkpoint(self) -> None:
        """Copy the log into the database now (PASSIVE: never waits for, nor blocks, a reader),
        so that `close`, which checkpoints whatever is left, has little left: a migration calls
        it while verification waits for the target. Best effort: durability does not depend on
        it (a committed write is in the log)."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self, *, durable: bool = True):
        return _Tx(self._db, self._lock, durable=durable, path=self.path)

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _rq(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """A read on the reader connection (sees every committed transaction)."""
        with self._rlock:
            return self._rdb.execute(sql, tuple(params)).fetchall()

    # -- binding and metadata ---------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        rows = self._q("SELECT v FROM migration WHERE k = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def put(self, **values: Any) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO migration(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                [(k, json.dumps(v, default=str)) for k, v in values.items()],
            )

    def bind(self, binding: dict[str, Any]) -> bool:
        """Bind a new journal to its identities, or check an existing one. True if resuming.

        Refuses (BadInput, exit 2) a journal made for another source, spec, target or mode, naming
        which one differs: resuming someone else's plan against this target could duplicate or lose.
        """
        existing = self.get("binding")
        if existing is None:
            self.put(binding=binding, created_at=_now())
            return False
        for key in BINDING_KEYS:
            old, new = existing.get(key), binding.get(key)
            if old != new:
                raise BadInput(
                    f"{self.path}: journal is bound to another {key} "
                    f"(journal: {_describe(old)}; this run: {_describe(new)}); "
                    "use --restart to discard it, or another --journal"
                )
        return True

    @property
    def planned(self) -> bool:
        return bool(self.get("planned", False))

    def reset(self) -> None:
        """Forget the plan and everything done under it (the binding stays): the next run plans
        afresh and learns what the target already holds from its markers."""
        with self._tx() as db:
            for table in ("items", "chunks", "dead_letters", "changed"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
            db.execute("DELETE FROM migration WHERE k NOT IN ('binding', 'created_at')")

    # -- what an earlier run left in the target ---------------------------------------------
    def planned_keys(self) -> list[PlannedKey]:
        """``(source_id, content, collection, chunk_no)`` of every item still planned."""
        rows = self._q(
            "SELECT source_id, content, collection, chunk_no FROM items WHERE state = 'planned'"
        )
        return list(map(PlannedKey._make, rows))

    def record_changed(self, rows: Iterable[tuple[str, str, str, str | None, str | None]]) -> None:
        """``(source_id, target_id, collection, old_content, new_content)`` found in the target."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO changed(source_id, target_id, collection, old_content, new_content)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(source_id) DO UPDATE SET"
                " target_id = excluded.target_id, old_content = excluded.old_content,"
                " new_content = excluded.new_content, state = 'found'",
                rows,
            )

    def changed_items(self, state: str | None = None) -> list[dict[str, Any]]:
        """Items already in the target whose payload differs from what this plan would send."""
        rows = self._q(
            "SELECT c.source_id, c.target_id, c.collection, c.old_content, c.new_content, c.state,"
            " i.payload FROM changed c JOIN items i USING (source_id)"
            + (" WHERE c.state = ?" if state else "")
            + " ORDER BY i.seq",
            (state,) if state else (),
        )
        return [
            {
                "source_id": s,
                "target_id": t,
                "collection": c,
                "landed_content": o,
                "planned_content": n,
                "state": st,
                "payload": p,
            }
            for s, t, c, o, n, st, p in rows
        ]

    def mark_updated(self, source_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE changed SET state = 'updated' WHERE source_id = ?", (source_id,))

    # -- the plan ---------------------------------------------------------------------------
    def write_plan(
        self,
        items: Iterable[PlannedItem],
        *,
        chunk_size: int = MAX_CHUNK_ITEMS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """Store every item (in plan order), cut chunks — all in one transaction, then mark
        ``planned``."""
        with self._tx() as db:
            db.execute("DELETE FROM items")
            db.execute("DELETE FROM chunks")
            db.execute("DELETE FROM dead_letters")
            db.execute("DELETE FROM changed")
            db.executemany(
                "INSERT INTO items(source_id, seq, collection, container_tag, sort_key, fp, nbytes,"
                " payload, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        i.source_id,
                        n,
                        i.collection,
                        i.container_tag,
                        i.sort_key,
                        i.fp,
                        i.nbytes,
                        i.payload,
                        i.content,
                    )
                    for n, i in enumerate(items)
                ),
            )
            cur = db.execute("SELECT source_id, collection, nbytes FROM items ORDER BY seq")
            assignments = list(assign_chunks(cur, chunk_size=chunk_size, max_bytes=max_bytes))
            db.executemany(
                "UPDATE items SET chunk_no = ? WHERE source_id = ?",
                ((chunk_no, sid) for sid, chunk_no in assignments),
            )
            db.execute(
                "INSERT INTO chunks(chunk_no, collection, n_items, n_bytes, updated_at)"
                " SELECT chunk_no, min(collection), count(*), sum(nbytes), ? FROM items GROUP BY chunk_no",
                (_now(),),
            )
            db.execute(
                "INSERT INTO migration(k, v) VALUES ('planned', 'true')"
                " ON CONFLICT(k) DO UPDATE SET v = 'true'"
            )

    def begin_plan(self) -> None:
        """Start a streamed plan (`migrate.planstream`): forget any earlier plan rows."""
        with self._tx() as db:
            for table in ("items", "chunks", "dead_letters", "changed"):
                db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
            db.execute("DELETE FROM migration WHERE k = 'planned'")

    def write_plan_batch(
        self,
        items: list[tuple],
        chunks: list[tuple[int, str, int, int]],
        changed: list[tuple[str, str | None, str, str | None, str | None]],
        *,
        finished: bool,
    ) -> list[int]:
        """One durable transaction of a streamed plan: item rows ``(source_id, seq, chunk_no,
        collection, container_tag, sort_key, fp, nbytes, payload, content, state, target_id)``,
        the rows of the chunks these items closed, items already held whose content differs, and
        with ``finished`` the ``planned`` mark. Returns the closed chunks with items to send."""
        now = _now()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO items(source_id, seq, chunk_no, collection, container_tag, sort_key,"
                " fp, nbytes, payload, content, state, target_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                items,
            )
            if changed:
                db.executemany(
                    "INSERT INTO changed(source_id, target_id, collection, old_content,"
                    " new_content) VALUES (?, ?, ?, ?, ?) ON CONFLICT(source_id) DO NOTHING",
                    changed,
                )
            db.executemany(
                "INSERT INTO chunks(chunk_no, collection, n_items, n_bytes, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(c, coll, n, b, now) for c, coll, n, b in chunks],
            )
            todo = []
            if chunks:
                lo, hi = chunks[0][0], chunks[-1][0]
                pending = {
                    r[0]
                    for r in db.execute(
                        "SELECT DISTINCT chunk_no FROM items WHERE chunk_no BETWEEN ? AND ?"
                        " AND state = 'planned'",
                        (lo, hi),
                    )
                }
                done = [(now, c) for c, *_ in chunks if c not in pending]
                db.executemany(
                    "UPDATE chunks SET state = 'done', updated_at = ? WHERE chunk_no = ?", done
                )
                todo = [c for c, *_ in chunks if c in pending]
            if finished:
                db.execute(
                    "INSERT INTO migration(k, v) VALUES ('planned', 'true')"
                    " ON CONFLICT(k) DO UPDATE SET v = 'true'"
                )
        return todo

    # -- reading work -----------------------------------------------------------------------
    def chunks_in(self, *states: str) -> list[int]:
        marks = ",".join("?" * len(states))
        return [
            r[0]
            for r in self._q(
                f"SELECT chunk_no FROM chunks WHERE state IN ({marks}) ORDER BY chunk_no", states
            )
        ]

    def chunk_collection(self, chunk_no: int) -> str:
        return self._rq("SELECT collection FROM chunks WHERE chunk_no = ?", (chunk_no,))[0][0]

    def pending_items(self, chunk_no: int) -> list[PendingItem]:
        """``(source_id, payload, fp)`` of the chunk's items not yet done or dead, in plan order."""
        rows = self._rq(
            "SELECT source_id, payload, fp FROM items WHERE chunk_no = ? AND state = 'planned'"
            " ORDER BY coalesce(container_tag, ''), sort_key, source_id",
            (chunk_no,),
        )
        return list(map(PendingItem._make, rows))

    def pending_items_by_chunk(self, chunk_nos: set[int]) -> dict[int, list[tuple[str, str]]]:
        """``{chunk_no: [(source_id, fp), ...]}`` of items still planned, in one scan (resume and
        reconciliation look at thousands of chunks at once)."""
        out: dict[int, list[tuple[str, str]]] = {}
        rows = self._rq(
            "SELECT chunk_no, source_id, fp FROM items WHERE state = 'planned'"
            " ORDER BY chunk_no, coalesce(container_tag, ''), sort_key, source_id"
        )
        for chunk_no, sid, fp in rows:
            if chunk_no in chunk_nos:
                out.setdefault(chunk_no, []).append((sid, fp))
        return out

    def claimed_target_ids(self) -> set[str]:
        return {r[0] for r in self._q("SELECT target_id FROM items WHERE target_id IS NOT NULL")}

    # -- state changes (each one committed) ------------------------------------------------
    def mark_in_flight(self, chunk_no: int) -> None:
        """Advisory (synchronous=NORMAL: survives any process kill, not a power cut): a resumed run
        reconciles every unfinished chunk against the target anyway, so this mark only says where
        work was going on."""
        with self._tx(durable=False) as db:
            db.execute(
                "UPDATE chunks SET state = 'in_flight', updated_at = ? WHERE chunk_no = ?",
                (_now(), chunk_no),
            )

    def mark_planned(self, chunk_no: int) -> None:
        """Back to the queue (e.g. after reconciliation found items still missing)."""
        with self._tx() as db:
            db.execute(
                "UPDATE chunks SET state = 'planned', updated_at = ? WHERE chunk_no = ?",
                (_now(), chunk_no),
            )

    def record_done(self, chunk_no: int, pairs: Iterable[tuple[str, str | None]]) -> bool:
        """Record landed items (target id may be unknown, e.g. import mode); close the chunk if
        nothing is left. Returns True when the chunk became ``done``."""
        with self._tx() as db:
            db.executemany(
                "UPDATE items SET state = 'done', target_id = coalesce(?, target_id)"
                " WHERE source_id = ? AND state = 'planned'",
                ((tid, sid) for sid, tid in pairs),
            )
            return _close_if_finished(db, chunk_no)

    def record_done_batch(
        self, batch: list[tuple[int, list[tuple[str, str | None]] | None]]
    ) -> None:
        """Several chunks' updates in ONE durable transaction (group commit: one fsync for all the
        calls that returned meanwhile), applied in order. ``pairs=None`` marks the chunk
        ``in_flight`` (advisory, see `mark_in_flight`); a list records landed items."""
        now = _now()
        with self._tx() as db:
            touched = set()
            for chunk_no, pairs in batch:
                if pairs is None:
                    db.execute(
                        "UPDATE chunks SET state = 'in_flight', updated_at = ?"
                        " WHERE chunk_no = ? AND state NOT IN ('done', 'dead')",
                        (now, chunk_no),
                    )
                    continue
                db.executemany(
                    "UPDATE items SET state = 'done', target_id = coalesce(?, target_id)"
                    " WHERE source_id = ? AND state = 'planned'",
                    ((tid, sid) for sid, tid in pairs),
                )
                touched.add(chunk_no)
            for chunk_no in touched:
                _close_if_finished(db, chunk_no)

    def record_dead_items(self, chunk_no: int, dead: Iterable[tuple[str, int | None, str]]) -> bool:
        """Dead-letter items the server refused (``(source_id, status, message)``)."""
        with self._tx() as db:
            for sid, status, message in dead:
                db.execute(
                    "UPDATE items SET state = 'dead' WHERE source_id = ? AND state = 'planned'",
                    (sid,),
                )
                db.execute(
                    "INSERT INTO dead_letters(source_id, chunk_no, status, message, at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(source_id) DO UPDATE SET status = excluded.status, message = excluded.message",
                    (sid, chunk_no, status, mask(message), _now()),
                )
            return _close_if_finished(db, chunk_no)

    def note_error(self, chunk_no: int, message: str) -> None:
        """Remember the latest (transient) error for `status`; does not count as an attempt."""
        with self._tx(durable=False) as db:
            db.execute(
                "UPDATE chunks SET last_error = ?, updated_at = ? WHERE chunk_no = ?",
                (mask(message)[:500], _now(), chunk_no),
            )

    def record_failure(self, chunk_no: int, message: str, *, max_attempts: int) -> str:
        """A non-transient failure: count it; at ``max_attempts`` the chunk's remaining items die.

        Returns the chunk's new state (``failed`` or ``dead``)."""
        message = mask(message)
        with self._tx() as db:
            db.execute(
                "UPDATE chunks SET attempts = attempts + 1, last_error = ?, state = 'failed', updated_at = ?"
                " WHERE chunk_no = ?",
                (message[:500], _now(), chunk_no),
            )
            attempts = db.execute(
                "SELECT attempts FROM chunks WHERE chunk_no = ?", (chunk_no,)
            ).fetchone()[0]
            if attempts < max_attempts:
                return "failed"
            rows = db.execute(
                "SELECT source_id FROM items WHERE chunk_no = ? AND state = 'planned'", (chunk_no,)
            ).fetchall()
            for (sid,) in rows:
                db.execute(
                    "INSERT INTO dead_letters(source_id, chunk_no, status, message, at) VALUES (?, ?, NULL, ?, ?)"
                    " ON CONFLICT(source_id) DO NOTHING",
                    (sid, chunk_no, f"gave up after {attempts} attempts: {message}"[:2000], _now()),
                )
            db.execute(
                "UPDATE items SET state = 'dead' WHERE chunk_no = ? AND state = 'planned'",
                (chunk_no,),
            )
            db.execute("UPDATE chunks SET state = 'dead' WHERE chunk_no = ?", (chunk_no,))
            return "dead"

    # -- reporting --------------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        chunk_states = dict.fromkeys(CHUNK_STATES, 0)
        chunk_states.update(dict(self._q("SELECT state, count(*) FROM chunks GROUP BY state")))
        item_states = dict(self._q("SELECT state, count(*) FROM items GROUP BY state"))
        return {
            "chunks": chunk_states,
            "chunks_total": sum(chunk_states.values()),
            "items_total": sum(item_states.values()),
            "items_done": item_states.get("done", 0),
            "items_dead": item_states.get("dead", 0),
            "items_pending": item_states.get("planned", 0),
        }

    def last_errors(self, limit: int = 5) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT chunk_no, state, attempts, last_error FROM chunks WHERE last_error IS NOT NULL"
            " ORDER BY updated_at DESC LIMIT ?",
            (limit,),
        )
        return [
            {"chunk": c, "state": s, "attempts": a, "error": None if e is None else mask(e)}
            for c, s, a, e in rows
        ]

    def iter_items(self) -> Iterator[ItemRow]:
        """Every item (`ItemRow`: source_id, target_id, collection, container_tag, fp, chunk_no,
        state), in plan order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT source_id, target_id, collection, container_tag, fp, chunk_no, state FROM items ORDER BY seq"
            ).fetchall()
        return map(ItemRow._make, rows)

    def item_batches(self, size: int = 20_000) -> Iterator[list[tuple]]:
        """`iter_items`' rows, ``size`` at a time, from one read on the reader connection: a
        caller turning them into columns holds one batch of Python rows, never all of them.
        In rowid order, which is plan order (both plan writers insert in ``seq`` order) without
        SQLite sorting every row in memory first (``seq`` has no index)."""
        with self._rlock:
            cur = self._rdb.execute(
                "SELECT source_id, target_id, collection, container_tag, fp, chunk_no, state"
                " FROM items ORDER BY rowid"
            )
            try:
                while rows := cur.fetchmany(size):
                    yield rows
            finally:
                cur.close()

    def set_target_ids(self, pairs: Iterable[tuple[str, str]]) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE items SET target_id = ? WHERE source_id = ? AND target_id IS NULL",
                ((t, s) for s, t in pairs),
            )

    def dead_letters(self) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT d.source_id, d.chunk_no, d.status, d.message, i.collection, i.payload"
            " FROM dead_letters d JOIN items i USING (source_id) ORDER BY i.seq"
        )
        return [
            {
                "source_id": s,
                "chunk": c,
                "status": st,
                "message": None if m is None else mask(m),
                "collection": coll,
                "item": mask_obj(json.loads(p), keys_only=True),
            }
            for s, c, st, m, coll, p in rows
        ]


def is_journal(path: str | Path) -> bool:
    """True if ``path`` is a migration journal (checked read-only: never add tables to someone
    else's SQLite file, e.g. a target store passed as --journal by mistake)."""
    try:
        con = sqlite3.connect(f"file:{Path(path).absolute()}?mode=ro", uri=True)
        try:
            return bool(
                con.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'migration'"
                ).fetchone()[0]
            )
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return False


def _close_if_finished(db: sqlite3.Connection, chunk_no: int) -> bool:
    left = db.execute(
        "SELECT count(*) FROM items WHERE chunk_no = ? AND state = 'planned'", (chunk_no,)
    ).fetchone()[0]
    if left == 0:
        db.execute(
            "UPDATE chunks SET state = 'done', updated_at = ? WHERE chunk_no = ? AND state != 'dead'",
            (_now(), chunk_no),
        )
        return True
    return False


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` under the journal lock; rollback on error."""

    def __init__(
        self, db: sqlite3.Connection, lock: threading.RLock, *, durable: bool, path: Path
    ) -> None:
        self.db, self.lock, self.durable, self.path = db, lock, durable, path

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        self.db.execute("PRAGMA synchronous=" + ("FULL" if self.durable else "NORMAL"))
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                self.db.execute("ROLLBACK")
        except sqlite3.OperationalError as failure:
            raise _full(self.path, failure) or failure from None
        finally:
            self.lock.release()
        if exc is not None and isinstance(exc, sqlite3.OperationalError):
            full = _full(self.path, exc)
            if full is not None:
                raise full from None


class JournalFull(BadInput):
    """The journal's disk (or file size limit) is full. SQLite rolled the write back, so the
    journal is consistent: the engine adds the resume command wherever in the run it surfaced."""


def _full(path: Path, exc: BaseException) -> JournalFull | None:
    """JournalFull naming the journal when SQLite says the disk (or the file size limit) is full."""
    text = str(exc).lower()
    if "full" in text or "too large" in text:
        return JournalFull(f"{path}: no space left on device while writing the journal ({exc})")
    if "disk i/o" in text:  # SQLite's word for a failed write (a file size limit, a dying disk)
        return JournalFull(
            f"{path}: cannot write the journal: no space left or the disk failed ({exc})"
        )
    return None

"""The SQLite file behind ``local:PATH``: schema, connections and transactions.

``api.local.LocalStore`` is the Longmem API over it; this is only the storage discipline: one
connection per thread, WAL, ``busy_timeout``, writes in ``BEGIN IMMEDIATE`` transactions committed
(``synchronous=FULL``) before the call returns, so a write is durable when it returns and several
uploader threads (or processes) can share one store; writers of one process queue on a lock.
WAL checkpoints run on a thread of their own (`api.localwal`), not inside a caller's COMMIT.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

from longmem_etl.api import localrows
from longmem_etl.api.localwal import Checkpointer
from longmem_etl.errors import EXIT_BAD_INPUT, APIError, BadInput, LongmemETLError

STORE_FORMAT = "longmem-etl-local/1"
BUSY_TIMEOUT_S = 30.0
OPEN_TIMEOUT_S = 2.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS header (position INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, value TEXT);
CREATE TABLE IF NOT EXISTS collections (position INTEGER PRIMARY KEY, name TEXT, raw TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS memories (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT, collection TEXT, text, importance, category, metadata, source, container_tag,
    pinned INTEGER, archived INTEGER, created_at, updated_at, expires_at, superseded_by,
    extra TEXT, fidelity TEXT, created_ts REAL, updated_ts REAL, expires_ts REAL
);
CREATE INDEX IF NOT EXISTS memories_id ON memories(id);
CREATE INDEX IF NOT EXISTS memories_order ON memories(collection, pinned, created_ts, seq);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, content='memories', content_rowid='seq', tokenize='unicode61 remove_diacritics 2'
);
"""

# FTS kept in step with memories; dropped during a bulk seed and the index rebuilt once instead.
TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE OF text ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text) VALUES ('delete', old.seq, old.text);
    INSERT INTO memories_fts(rowid, text) VALUES (new.seq, new.text);
END;
"""

_ROWS_PER_INSERT = 100  # the API's batch cap: one statement per add_many


@functools.lru_cache(maxsize=8)
def _insert_sql(rows: int) -> str:
    """``INSERT INTO memories(...) VALUES (?, ...), ...`` for ``rows`` rows."""
    one = "(" + ", ".join("?" * len(localrows.COLUMNS)) + ")"
    return f"INSERT INTO memories({', '.join(localrows.COLUMNS)}) VALUES " + ", ".join([one] * rows)


def _max_variables(conn: sqlite3.Connection) -> int:
    """This SQLite's bound-parameter limit (999 before 3.32, 32766 since)."""
    try:
        return conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except AttributeError:  # Python < 3.11
        return 999


def encoded_rows(
    mems: Iterable[dict[str, Any]], *, depth_checked: bool = False
) -> list[tuple[Any, ...]]:
    """Memories -> INSERT parameters. Callers run this *before* taking the write lock: encoding is
    pure Python (it holds the GIL), and under the lock it stretched every writer's turn while the
    other uploader threads queued behind it. ``depth_checked``: the caller already refused
    memories nested too deep (`localrows.encode`)."""
    cols = localrows.COLUMNS
    out = []
    for mem in mems:
        row = localrows.encode(mem, depth_checked=depth_checked)
        out.append(tuple([row[c] for c in cols]))
    return out


class StoreUnwritable(APIError):
    """The store's own file cannot be written: disk full, a file size limit, an I/O error.

    To a migration it is the target refusing to store (507 Insufficient Storage, which stops the
    run with its resume command: retrying cannot help); to a CLI verb, exit 2. The message is
    the one line the user sees: which file, what happened, what to do."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        LongmemETLError.__init__(self, message)
        self.status, self.message, self.retry_after = 507, message, None

    @property
    def retryable(self) -> bool:
        return False


_IO_NAMES = ("SQLITE_IOERR", "SQLITE_FULL")


def unwritable(path: Path, exc: BaseException) -> StoreUnwritable | None:
    """`StoreUnwritable` for a SQLite error that says the disk refused a write of ``path`` (its
    ``-wal`` and ``-journal`` included), else None. SQLite reports a file size limit (EFBIG)
    as a bare "disk I/O error", so the cause is found by looking: the process's ``ulimit -f``
    against the files' sizes, then the free space of the file's file system."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc).lower()
    if not (name.startswith(_IO_NAMES) or "disk i/o error" in text or "disk is full" in text):
        return None
    where = f"local:{path}"
    again = "then run the same command again (the failed write was rolled back)"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    files = [path, Path(f"{path}-wal"), Path(f"{path}-journal")]
    sizes = [f.stat().st_size for f in files if f.exists()]
    if limit != resource.RLIM_INFINITY and sizes and max(sizes) + (1 << 17) >= limit:
        return StoreUnwritable(
            f"{where}: cannot write the store: its file reached this process's file size limit "
            f"({limit} bytes, `ulimit -f`); raise the limit or move the store, {again}"
        )
    try:
        st = os.statvfs(path.parent)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    if "full" in text or name.startswith("SQLITE_FULL") or (free is not None and free < 1 << 24):
        return StoreUnwritable(
            f"{where}: cannot write the store: no space left on the device (or a quota); "
            f"free space, {again}"
        )
    return StoreUnwritable(
        f"{where}: cannot write the store: the file system reported an I/O error ({exc}); "
        f"check the disk, {again}"
    )


class StoreFile:
    """One store's SQLite file: per-thread connections, read and write transactions."""

    def __init__(self, path: str | Path, *, create: bool, tenant: str | None) -> None:
        self.path = Path(path).expanduser().resolve()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        # Writers of this process queue here instead of in SQLite's busy handler, which sleeps in
        # steps of up to 100 ms and so stretched concurrent calls far past their latency.
        self._write_lock = threading.Lock()
        self._checkpointer = Checkpointer(self, self.path, timeout=BUSY_TIMEOUT_S)
        self._open(create=create, tenant=tenant)

    # -- connections ------------------------------------------------------------------------------

    def _open(self, *, create: bool, tenant: str | None) -> None:
        where = f"local:{self.path}"
        if self.path.is_dir():
            raise BadInput(f"{where}: is a directory, expected a SQLite file")
        exists = self.path.exists()
        if not exists and not create:
            raise BadInput(f"{where}: no such local store")
        if not exists:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BadInput(f"{where}: cannot create directory: {exc.strerror}") from None
        try:
            conn = self._connect(timeout=OPEN_TIMEOUT_S)
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if tables and "meta" not in tables:
                raise BadInput(f"{where}: is a SQLite database but not a longmem-etl local store")
            if "meta" in tables:
                fmt = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
                if not fmt or fmt[0] != STORE_FORMAT:
                    raise BadInput(
                        f"{where}: unsupported local store format {fmt[0] if fmt else None!r}"
                    )
            else:
                conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + TRIGGERS + "COMMIT;")
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                    [
                        ("format", STORE_FORMAT),
                        ("tenant", tenant or self.path.stem or "local"),
                        ("seeded", "0"),
                    ],
                )
                conn.execute("COMMIT")
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        except sqlite3.DatabaseError as exc:
            msg = str(exc)
            if (problem := unwritable(self.path, exc)) is not None:
                raise BadInput(str(problem)) from None
            if "locked" in msg or "busy" in msg:
                raise BadInput(f"{where}: database is locked by another process") from None
            if "not a database" in msg or "malformed" in msg or "encrypted" in msg:
                raise BadInput(f"{where}: not a SQLite database") from None
            if "unable to open" in msg or "readonly" in msg:
                raise BadInput(f"{where}: cannot open ({msg})") from None
            raise BadInput(f"{where}: {msg}") from None
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)

    def _connect(self, *, timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # `localwal.Checkpointer` does it instead
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(timeout=BUSY_TIMEOUT_S)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed (durably) before the caller returns. A write the disk
        refuses (full, a file size limit, an I/O error) is rolled back and raised as
        `StoreUnwritable`, naming this file."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                problem = unwritable(self.path, exc)
                if problem is not None:
                    raise problem from exc
                raise
            self._checkpointer.catch_up(conn)  # rarely: once the log needs to start over
        self._checkpointer.poke()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent view for multi-statement reads."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self._checkpointer.close()
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                conn.close()
        self._local = threading.local()

    def _meta(self, conn: sqlite3.Connection, key: str) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _insert(self, conn: sqlite3.Connection, params: list[tuple[Any, ...]]) -> None:
        """Insert rows already encoded by `encoded_rows` (done before the write lock is taken).

        Multi-row ``INSERT … VALUES (…), (…)``: one statement step inserts a whole batch (and
        runs the FTS trigger) with the GIL released, where ``executemany`` would take the GIL
        back for every row — and under the writer lock, each of those waits on whatever Python
        the other threads are running."""
        width = len(localrows.COLUMNS)
        per = max(1, min(_ROWS_PER_INSERT, _max_variables(conn) // width))
        for start in range(0, len(params), per):
            part = params[start : start + per]
            conn.execute(_insert_sql(len(part)), list(chain.from_iterable(part)))

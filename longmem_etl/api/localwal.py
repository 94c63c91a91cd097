"""The embedded store's WAL checkpoints, run beside the calls instead of inside one of them.

SQLite checkpoints a WAL database from inside whichever COMMIT crosses ``wal_autocheckpoint``
pages: that call copies the log into the database file and fsyncs it while it still holds the
write lock, and every writer queued behind it waits too (100-item ``add_many`` commits: 1.2 ms
median, 12–22 ms at p99). A database server does this in the background; so does the store now:
its connections turn automatic checkpoints off (`localdb.StoreFile`), and after a write commits a
`Checkpointer` thread (one per open store file) runs a PASSIVE checkpoint — which never waits for,
nor blocks, readers or writers — at most every ``INTERVAL_S``, on a connection of its own. With
eight writers each sleeping a 200 ms latency per call (the uploader's pattern) on a 100k-row store,
the time a round of eight calls took beyond the sleep went from 57–100 ms to 38–45 ms. (A single
writer committing back to back gains nothing: the checkpoint's I/O then overlaps every commit.)

Nothing about durability changes: a write is durable when its COMMIT returns, the log being part
of the database; a checkpoint only moves committed pages into the main file. If a checkpoint fails
(a reader pinning the log, a full disk) the next write tries again, and closing the last connection
checkpoints everything, as SQLite always does.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from pathlib import Path

INTERVAL_S = 0.1
"""At most one checkpoint per this many seconds: each copies what the writes since the last one
logged (a few calls' pages), and fsyncs the database file once."""

RESTART_FRAMES = 8192
"""Log size (pages, 32 MiB at 4 KiB) past which the log is made to start over. A PASSIVE
checkpoint running beside writers never catches up with the newest frames, and SQLite restarts
the log only after a checkpoint that did: so once the thread sees the log this long, the next
write, still holding the writer lock, checkpoints what is left (the frames since the thread's
last checkpoint) itself (`Checkpointer.catch_up`), and the write after it starts the log from its
beginning. (The thread taking the writer lock instead starved behind a writer calling back to
back: Python's locks are not fair.)"""


class Checkpointer:
    """WAL checkpoints of one store file on a thread of their own; see the module docstring."""

    def __init__(self, owner: object, path: Path, *, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._restart_due = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # The thread holds no reference to the store: a store nobody closes is still collected,
        # and then its checkpointer ends.
        weakref.finalize(owner, _halt, self._stop, self._wake)

    def poke(self) -> None:
        """A write committed: checkpoint soon (starting the thread on the first write)."""
        thread = self._thread
        if thread is None or not thread.is_alive():  # first write, or a forked child
            with self._lock:
                thread = self._thread
                if (thread is None or not thread.is_alive()) and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=_run,
                        args=(self._path, self._timeout, self._restart_due, self._wake, self._stop),
                        name="local-store-checkpoint",
                        daemon=True,
                    )
                    self._thread.start()
        self._wake.set()

    def catch_up(self, conn: sqlite3.Connection) -> None:
        """Called by a writer holding the writer lock, after its COMMIT: when the log has grown
        past ``RESTART_FRAMES``, checkpoint the rest of it here, so the next write restarts it."""
        if self._restart_due.is_set():
            self._restart_due.clear()
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (a checkpoint in progress finishes first)."""
        _halt(self._stop, self._wake)
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)


def _halt(stop: threading.Event, wake: threading.Event) -> None:
    stop.set()
    wake.set()


def _run(
    path: Path,
    timeout: float,
    restart_due: threading.Event,
    wake: threading.Event,
    stop: threading.Event,
) -> None:
    while True:
        wake.wait()
        if stop.is_set():
            return
        wake.clear()
        if checkpoint(path, timeout=timeout) > RESTART_FRAMES:
            restart_due.set()
        if stop.wait(INTERVAL_S):
            return


def checkpoint(path: Path, *, timeout: float) -> int:
    """One PASSIVE checkpoint of ``path`` on a fresh connection; the log's length in frames
    (0 when it failed: the next write tries again)."""
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(row[1]) if row and row[1] is not None and row[1] > 0 else 0
        finally:
            conn.close()
    return 0

"""The embedded store's WAL checkpoints run on a thread of their own (`api.localwal`): the log
still starts over, the thread ends with its store, and what a caller wrote is in the file."""

from __future__ import annotations

import gc
import sqlite3
import threading
from pathlib import Path

import pytest

from longmem_etl.api import localwal
from longmem_etl.api.faults import FaultConfig
from longmem_etl.api.local import LocalStore


def _fill(store: LocalStore, calls: int, start: int = 0) -> None:
    for b in range(start, start + calls):
        store.add_many([f"batch {b} item {i} " + "word " * 20 for i in range(50)], collection="c")


def test_calls_never_checkpoint_and_a_complete_checkpoint_lets_the_log_start_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Driven by hand (the thread held off): writes only grow the log (no COMMIT checkpoints it),
    a checkpoint catches up, and the next write starts the log from its beginning."""
    monkeypatch.setattr(localwal.Checkpointer, "poke", lambda self: None)
    path = tmp_path / "t.db"
    store = LocalStore(path)
    assert store._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    _fill(store, 20)
    grown = localwal.checkpoint(path, timeout=5.0)
    assert grown > 20  # every call's frames are still in the log: none checkpointed it inline
    assert localwal.checkpoint(path, timeout=5.0) == grown  # complete: nothing new since
    _fill(store, 1, start=20)
    assert 0 < localwal.checkpoint(path, timeout=5.0) < grown  # the write restarted the log
    assert store.count() == 21 * 50
    store.close()


def test_the_log_does_not_grow_with_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes a few ms apart (a call's latency): the log restarts along the way, so its file stays
    far smaller than the same writes logged with no checkpoint at all."""
    monkeypatch.setattr(localwal, "RESTART_FRAMES", 16)
    monkeypatch.setattr(localwal, "INTERVAL_S", 0.0)
    with monkeypatch.context() as m:
        m.setattr(localwal.Checkpointer, "poke", lambda self: None)
        ref = LocalStore(tmp_path / "ref.db")
        _fill(ref, 60)
        unchecked = Path(str(tmp_path / "ref.db") + "-wal").stat().st_size
        ref.close()
    path = tmp_path / "t.db"
    store = LocalStore(path, faults=FaultConfig(latency_ms=5))
    _fill(store, 60)
    store._checkpointer.close()  # let a checkpoint in progress finish
    assert Path(str(path) + "-wal").stat().st_size < unchecked // 2
    assert store.count() == 60 * 50
    store.close()


def test_the_thread_ends_with_its_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "t.db")
    _fill(store, 2)
    thread = store._checkpointer._thread
    assert thread is not None and thread.is_alive()
    store.close()
    thread.join(10)
    assert not thread.is_alive()
    with sqlite3.connect(tmp_path / "t.db") as conn:  # all of it in the file, log or not
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 100


def test_a_store_nobody_closes_is_collected_and_its_thread_ends(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "t.db")
    _fill(store, 2)
    thread = store._checkpointer._thread
    assert isinstance(thread, threading.Thread) and thread.is_alive()
    del store
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()

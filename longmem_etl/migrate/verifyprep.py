"""Verification prepared while the upload's last calls are out (`PreparedVerification`).

Why: after the last call is answered, a user waits for verification and outputs. Most of what they
need does not depend on the upload's outcome and can be made while the calls are still out (the
process mostly waits on the API then):

- a warm DuckDB connection (connecting costs 20-40 ms, and DuckDB's import more on a cold start);
- the plan's *fixed* columns: ``source_id``, ``collection``, ``container_tag``, ``fp``,
  ``chunk_no``, in plan (rowid) order. Once the plan is finished these never change (uploading
  changes only ``state`` and ``target_id``), so they are read here, on a connection of their own
  (the workers' reader connection is not held for a whole-table read).

What is left at the end is the target read, a narrow read of ``(target_id, state)`` in the same
order (`narrow_columns`), and the comparison. If the plan grew after the preparation (it was made
too early) the row counts differ and the caller reads the journal whole instead (`complete`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from longmem_etl.arrays import int64s, strings

FIXED = pa.schema(
    [
        ("source_id", pa.string()),
        ("collection", pa.string()),
        ("container_tag", pa.string()),
        ("fp", pa.string()),
        ("chunk", pa.int64()),
    ]
)
"""What a finished plan's items never change (their order: the journal's rowid order)."""

_BATCH = 20_000


class PreparedVerification:
    """Started in a thread while calls are out; `connection` and `fixed_columns` wait for their
    part (and raise what the preparation raised); `close` ends it whatever happened."""

    def __init__(self, journal_path: str | Path) -> None:
        self.journal_path = Path(journal_path)
        self.con: duckdb.DuckDBPyConnection | None = None
        self.fixed: pa.Table | None = None
        self.seconds = 0.0
        self._error: BaseException | None = None
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._prepare, name="verify-prep", daemon=True)
        self._thread.start()

    def _prepare(self) -> None:
        t0 = time.monotonic()
        try:
            try:
                self.con = duckdb.connect()
                self.con.execute("SET threads = 1")  # see `verify.compare`
            finally:
                self._connected.set()  # the target read may start on it now
            self.fixed = fixed_columns(self.journal_path)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc
        finally:
            self.seconds = time.monotonic() - t0

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The warm connection, as soon as it is made (the fixed columns may still be read)."""
        self._connected.wait()
        if self.con is None:
            self._raise()
        assert self.con is not None
        return self.con

    def fixed_columns(self) -> pa.Table:
        """`FIXED`, waiting for the read to end."""
        self._thread.join()
        if self.fixed is None:
            self._raise()
        assert self.fixed is not None
        return self.fixed

    def _raise(self) -> None:
        self._thread.join()
        raise self._error if self._error is not None else RuntimeError("verification not prepared")

    def close(self) -> None:
        """Close the connection, drop the columns (verification is over, or will not run)."""
        self._thread.join()
        if self.con is not None:
            self.con.close()
            self.con = None
        self.fixed = None


def _rows(journal_path: Path, sql: str) -> list[list[tuple]]:
    """The rows of ``sql`` on a read-only connection of our own, in batches of Python tuples."""
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, timeout=30)
    try:
        cur = db.execute(sql)
        batches = []
        while rows := cur.fetchmany(_BATCH):
            batches.append(rows)
        return batches
    finally:
        db.close()


def fixed_columns(journal_path: Path) -> pa.Table:
    """`FIXED` of every planned item, in rowid (plan) order."""
    parts = []
    for rows in _rows(
        journal_path,
        "SELECT source_id, collection, container_tag, fp, chunk_no FROM items ORDER BY rowid",
    ):
        sid, coll, tag, fp, chunk = zip(*rows, strict=True)
        parts.append(
            pa.Table.from_arrays(
                [strings(sid), strings(coll), strings(tag), strings(fp), int64s_with_nulls(chunk)],
                schema=FIXED,
            )
        )
    return pa.concat_tables(parts) if parts else FIXED.empty_table()


_NARROW = pa.schema([("target_id", pa.string()), ("state", pa.string())])


def narrow_columns(journal_path: Path) -> pa.Table:
    """``(target_id, state)`` of every item in the same order as `fixed_columns`: what the
    upload changed, read at the end."""
    parts = []
    for rows in _rows(journal_path, "SELECT target_id, state FROM items ORDER BY rowid"):
        tid, state = zip(*rows, strict=True)
        parts.append(pa.Table.from_arrays([strings(tid), strings(state)], schema=_NARROW))
    return pa.concat_tables(parts) if parts else _NARROW.empty_table()


def int64s_with_nulls(values: tuple) -> pa.Array:
    """An int64 column with nulls, from NumPy (``pa.array(list)`` would import pandas)."""
    n = len(values)
    if not values.count(None):
        return int64s(np.fromiter(values, dtype=np.int64, count=n))
    is_null = np.fromiter((v is None for v in values), dtype=bool, count=n)
    data = np.fromiter((0 if v is None else v for v in values), dtype=np.int64, count=n)
    validity = pa.py_buffer(np.packbits(~is_null, bitorder="little"))
    return pa.Array.from_buffers(
        pa.int64(), n, [validity, pa.py_buffer(data)], null_count=int(is_null.sum())
    )

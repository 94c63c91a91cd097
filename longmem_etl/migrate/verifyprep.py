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

from longmem_etl.arrays import (
    concatenated_strings,
    int64s_with_nulls,
    sqlite_ints,
    strings,
)

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


def _connect(journal_path: Path) -> sqlite3.Connection:
    """A read-only connection of our own (WAL: it reads while the journal's writer commits)."""
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True, timeout=30)
    db.text_factory = bytes  # the windows' concatenated columns are bytes for Arrow as they are
    return db


def _read(journal_path: Path, schema: pa.Schema, columns: list[str]) -> pa.Table:
    """``columns`` of every item in rowid (plan) order as ``schema``: windows of rowids, each
    ONE aggregate query whose columns come back as one UTF-8 byte string plus byte lengths
    (`arrays.concatenated_strings`, as the embedded store reads its pages: no Python object
    per row). A window whose rowid list does not prove its order, or whose lengths do not add
    up, is read as tuples instead."""
    db = _connect(journal_path)
    try:
        low, high = db.execute("SELECT min(rowid), max(rowid) FROM items").fetchone()
        parts = []
        if low is not None:
            for start in range(low - 1, high, _BATCH):
                part = _window(db, schema, columns, start, start + _BATCH)
                if part is not None:
                    parts.append(part)
        return pa.concat_tables(parts) if parts else schema.empty_table()
    finally:
        db.close()


def _window(
    db: sqlite3.Connection, schema: pa.Schema, columns: list[str], after: int, upto: int
) -> pa.Table | None:
    """Items with ``after < rowid <= upto`` (None when there are none)."""
    aggregates = ", ".join(
        f"group_concat({c}, ''), group_concat(coalesce(length(CAST({c} AS BLOB)), -1), ',')"
        for c in columns
    )
    row = db.execute(
        f"SELECT count(*), group_concat(rowid, ','), {aggregates} FROM items"
        " WHERE rowid > ? AND rowid <= ?",
        (after, upto),
    ).fetchone()
    n = row[0]
    if not n:
        return None
    rowids = sqlite_ints(row[1], n)
    arrays: list[pa.Array] = []
    if rowids is not None and bool(np.all(rowids[1:] > rowids[:-1])):
        for k, field in enumerate(schema):
            array = concatenated_strings(row[2 + 2 * k], row[3 + 2 * k], n)
            if array is None:
                break
            arrays.append(array if field.type == pa.string() else _as_ints(array))
    if len(arrays) != len(columns):  # did not prove itself: the plain way
        rows = db.execute(
            f"SELECT {', '.join(columns)} FROM items WHERE rowid > ? AND rowid <= ? ORDER BY rowid",
            (after, upto),
        ).fetchall()
        return _tuples(rows, schema)
    return pa.Table.from_arrays(arrays, schema=schema)


def _as_ints(array: pa.Array) -> pa.Array:
    """An integer column SQLite handed over as text (NULLs stay NULL)."""
    return array.cast(pa.int64())


def _tuples(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    """Rows of bytes/ints -> ``schema`` (the fallback of `_window`)."""
    arrays = []
    for field, values in zip(schema, zip(*rows, strict=True), strict=True):
        if field.type == pa.string():
            arrays.append(strings([None if v is None else v.decode("utf-8") for v in values]))
        else:
            arrays.append(int64s_with_nulls(values))
    return pa.Table.from_arrays(arrays, schema=schema)


def fixed_columns(journal_path: Path) -> pa.Table:
    """`FIXED` of every planned item, in rowid (plan) order."""
    return _read(
        journal_path, FIXED, ["source_id", "collection", "container_tag", "fp", "chunk_no"]
    )


_NARROW = pa.schema([("target_id", pa.string()), ("state", pa.string())])


def narrow_columns(journal_path: Path) -> pa.Table:
    """``(target_id, state)`` of every item in the same order as `fixed_columns`: what the
    upload changed, read at the end."""
    return _read(journal_path, _NARROW, ["target_id", "state"])

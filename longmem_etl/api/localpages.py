"""The embedded store's `export_page`: its memories table read a page at a time into Arrow.

Keyset paging on the table's insertion sequence (``seq``), not OFFSET: a page costs the same at the
end of a million rows as at the start, and a memory that exists for the whole read is returned once
(updates and moves keep their ``seq``).

A page is read in windows of ``_BATCH`` rows (the rowid range up to the ``_BATCH``-th next row),
each ONE aggregate query: SQLite concatenates every column of the window into one UTF-8 byte
string plus a list of byte lengths (``-1`` for NULL), and those become Arrow string arrays
directly, with no Python object per row or per value (the tuple a row used to cost was most of a
page's time; now about half the time for 20k rows, `benchmarks/bench_store.py`). The window's
``seq`` list proves the rows came in order; a window that holds a dirty row (its fidelity records
a field that is not a string, in seeded data) or does not prove its order is read the plain way
instead: tuples of bytes, the dirty rows decoded whole and sent as ``raw``. Both ways read inside
the caller's one read transaction, so they see the same rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from operator import is_
from typing import Any

import numpy as np
import pyarrow as pa

from longmem_etl.api import localrows
from longmem_etl.api.pages import EXPORT_PAGE, FIELDS
from longmem_etl.arrays import concatenated_strings, sqlite_ints, string_array
from longmem_etl.errors import APIError

_COLUMNS = (*FIELDS, "metadata")
_WINDOW = "(SELECT seq, {cols}, fidelity FROM memories WHERE seq > ? ORDER BY seq LIMIT ?)".format(
    cols=", ".join(_COLUMNS)
)
_DIRTY = "instr(fidelity, '\"raw\"') > 0"
_SELECT = f"SELECT seq, {', '.join(_COLUMNS)}, {_DIRTY} FROM {_WINDOW}"
_AGGREGATE = "SELECT count(*), group_concat(seq, ','), {cols}, {dirty} FROM {window}".format(
    cols=", ".join(
        f"group_concat({c}, ''), group_concat(coalesce(length(CAST({c} AS BLOB)), -1), ',')"
        for c in _COLUMNS
    ),
    dirty=f"group_concat(CASE WHEN {_DIRTY} THEN seq END, ',')",
    window="memories WHERE seq > ? AND seq <= ?",  # a rowid range: no subquery to feed through
)
_BOUND = "SELECT seq FROM memories WHERE seq > ? ORDER BY seq LIMIT 1 OFFSET ?"
_LAST_SEQ = 2**63 - 1
_is_none = partial(is_, None)


def parse_cursor(cursor: Any) -> int:
    """The last ``seq`` of the previous page (0 before the first); 422 for anything else."""
    if cursor is None:
        return 0
    if isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) < 20:
        return int(cursor)
    raise APIError(422, "export_page: cursor must be a value returned as 'next' by export_page")


def read_page(conn: sqlite3.Connection, cursor: Any, limit: Any) -> dict[str, Any]:
    """``{"memories": EXPORT_PAGE table, "next": cursor | None}`` (see `api.pages`).

    Rows are fetched ``_BATCH`` at a time and turned into Arrow at once, so a 50k-row page never
    has 50k rows of Python objects alive together."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise APIError(422, "export_page: limit must be a positive integer")
    after = parse_cursor(cursor)
    parts: list[pa.Table] = []
    n, last = 0, after
    with _text_as(conn, bytes):
        while n < limit:
            want = min(_BATCH, limit - n)
            part, last = _window(conn, last, want)
            if part is None:
                break
            parts.append(part)
            n += part.num_rows
            if part.num_rows < want:
                break
    if not parts:
        return {"memories": EXPORT_PAGE.empty_table(), "next": None}
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return {"memories": table, "next": str(last) if n == limit else None}


_BATCH = 10_000


def _window(conn: sqlite3.Connection, after: int, want: int) -> tuple[pa.Table | None, int]:
    """The next ``want`` rows after ``seq`` ``after`` as an EXPORT_PAGE table (None when there
    are none) and the last ``seq`` read."""
    bound = conn.execute(_BOUND, (after, want - 1)).fetchone()  # the want-th row's seq
    row = conn.execute(_AGGREGATE, (after, bound[0] if bound else _LAST_SEQ)).fetchone()
    n = row[0]
    if not n:
        return None, after
    seqs = sqlite_ints(row[1], n)
    table = None
    if (
        n <= want
        and row[-1] is None
        and seqs is not None
        and seqs[0] > after
        and bool(np.all(seqs[1:] > seqs[:-1]))
    ):
        arrays = []
        for k, name in enumerate(_COLUMNS):
            array = _concatenated(row[2 + 2 * k], row[3 + 2 * k], n, name)
            if array is None:
                break
            arrays.append(array)
        else:
            arrays.append(pa.nulls(n, pa.string()))
            table = pa.Table.from_arrays(arrays, schema=EXPORT_PAGE)
    if table is None:  # a dirty row, or a window that did not prove itself: the plain way
        cur = conn.cursor()
        cur.row_factory = None  # plain tuples: no Row object per memory
        rows = cur.execute(_SELECT, (after, want)).fetchall()
        return _columns(conn, rows), rows[-1][0]
    return table, int(seqs[-1])


def _concatenated(data: bytes | None, lengths: bytes | None, n: int, name: str) -> pa.Array | None:
    """One column from its concatenated UTF-8 bytes and byte lengths (`arrays.concatenated_strings`),
    its bytes proven UTF-8 (`_valid`); None when the two do not agree (the caller reads the
    window the plain way)."""
    array = concatenated_strings(data, lengths, n)
    return None if array is None else _valid(array, name)


@contextmanager
def _text_as(conn: sqlite3.Connection, factory: Any) -> Iterator[None]:
    """TEXT values as ``factory`` (bytes or str) while inside; the connection is this thread's
    own (`localdb.StoreFile`), and the factory is read as each row is fetched."""
    before = conn.text_factory
    conn.text_factory = factory
    try:
        yield
    finally:
        conn.text_factory = before


def _columns(conn: sqlite3.Connection, rows: list[tuple]) -> pa.Table:
    """Rows of ``_SELECT`` (tuples of bytes) -> an EXPORT_PAGE table (dirty rows decoded whole
    into ``raw``)."""
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    values = cols[1:-1]  # id .. metadata, as bytes or None
    raw: list[bytes | None] | None = None
    if 1 in cols[-1]:
        values, raw = _dirty(conn, rows, cols[-1], values)
    arrays = [_strings(c, n, name) for c, name in zip(values, _COLUMNS, strict=True)]
    arrays.append(pa.nulls(n, pa.string()) if raw is None else _strings(raw, n, "raw"))
    return pa.Table.from_arrays(arrays, schema=EXPORT_PAGE)


def _dirty(
    conn: sqlite3.Connection, rows: list[tuple], flags: tuple, values: list[tuple]
) -> tuple[list[Any], list[bytes | None]]:
    """The rows whose fidelity has ``raw``: decoded whole (as ``str``, like every other reader);
    one with a field that is not a string is sent as ``raw`` JSON with its fields NULL."""
    n = len(rows)
    dirty = [i for i, flag in enumerate(flags) if flag == 1]
    fields = [list(c) for c in values]
    raw: list[bytes | None] = [None] * n
    seqs = [rows[i][0] for i in dirty]
    with _text_as(conn, str):
        full = conn.execute(
            f"SELECT * FROM memories WHERE seq IN ({','.join('?' * len(seqs))})", seqs
        ).fetchall()
    by_seq = {r["seq"]: r for r in full}
    for i in dirty:
        memory = localrows.decode(by_seq[rows[i][0]])
        if any(memory.get(f) is not None and not isinstance(memory.get(f), str) for f in FIELDS):
            raw[i] = localrows.dumps(memory).encode("utf-8")
            for col in fields:
                col[i] = None
    return fields, raw


def _strings(col: tuple | list, n: int, name: str) -> pa.Array:
    """UTF-8 bytes (or None) -> an Arrow string array: one join, lengths by ``map(len)``."""
    is_null = None
    if None in col:
        is_null = np.fromiter(map(_is_none, col), dtype=bool, count=n)
        col = [b"" if v is None else v for v in col]
    lengths = np.fromiter(map(len, col), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return _valid(string_array(n, offsets, b"".join(col), is_null), name)


def _valid(array: pa.Array, name: str) -> pa.Array:
    """``array`` once its bytes are proven UTF-8. The bytes are SQLite's; text the store wrote is
    valid UTF-8, but a file edited by other tools may not be, and an Arrow string must be: such a
    value fails as reading it as ``str`` did (an ``OperationalError``: the store answers 503)."""
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        raise sqlite3.OperationalError(f"Could not decode to UTF-8 column {name!r}") from None
    return array

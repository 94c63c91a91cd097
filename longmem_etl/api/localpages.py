"""The embedded store's `export_page`: its memories table read a page at a time into Arrow.

Keyset paging on the table's insertion sequence (``seq``), not OFFSET: a page costs the same at the
end of a million rows as at the start, and a memory that exists for the whole read is returned once
(updates and moves keep their ``seq``). Only the columns a page carries are read, as UTF-8 bytes
(the connection's ``text_factory`` is ``bytes`` for the read: no ``str`` decoded per value), and
each column becomes an Arrow string array from one join and the values' byte lengths, without a
dict or a ``str`` per memory; SQLite says which rows are dirty (their fidelity records a field that
is not a string, in seeded data), and only those are decoded whole and sent as ``raw``.
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
from longmem_etl.arrays import string_array
from longmem_etl.errors import APIError

_SELECT = (
    f"SELECT seq, {', '.join(FIELDS)}, metadata, instr(fidelity, '\"raw\"') > 0 "
    "FROM memories WHERE seq > ? ORDER BY seq LIMIT ?"
)
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
        cur = conn.cursor()
        cur.row_factory = None  # plain tuples: no Row object per memory
        cur.execute(_SELECT, (after, limit))
        while rows := cur.fetchmany(_BATCH):
            parts.append(_columns(conn, rows))
            n += len(rows)
            last = rows[-1][0]
            del rows
    if not parts:
        return {"memories": EXPORT_PAGE.empty_table(), "next": None}
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return {"memories": table, "next": str(last) if n == limit else None}


_BATCH = 5_000


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
    """Rows of ``_SELECT`` -> an EXPORT_PAGE table (dirty rows decoded whole into ``raw``)."""
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    values = cols[1:-1]  # id .. metadata, as bytes or None
    raw: list[bytes | None] | None = None
    if 1 in cols[-1]:
        values, raw = _dirty(conn, rows, cols[-1], values)
    names = (*FIELDS, "metadata")
    arrays = [_strings(c, n, name) for c, name in zip(values, names, strict=True)]
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
    """UTF-8 bytes (or None) -> an Arrow string array: one join, lengths by ``map(len)``.

    The bytes are SQLite's; text the store wrote is valid UTF-8, but a file edited by other tools
    may not be, and an Arrow string must be: such a value fails as reading it as ``str`` did
    (an ``OperationalError``, which the store answers as 503)."""
    is_null = None
    if None in col:
        is_null = np.fromiter(map(_is_none, col), dtype=bool, count=n)
        col = [b"" if v is None else v for v in col]
    lengths = np.fromiter(map(len, col), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    array = string_array(n, offsets, b"".join(col), is_null)
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        raise sqlite3.OperationalError(f"Could not decode to UTF-8 column {name!r}") from None
    return array

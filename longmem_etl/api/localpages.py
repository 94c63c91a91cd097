"""The embedded store's `export_page`: its memories table read a page at a time into Arrow.

Keyset paging on the table's insertion sequence (``seq``), not OFFSET: a page costs the same at the
end of a million rows as at the start, and a memory that exists for the whole read is returned once
(updates and moves keep their ``seq``). Only the columns a page carries are read, as tuples, and
turned into Arrow columns without building a dict per memory; the rare row whose fidelity says a
field is not a string (dirty seeded data) is decoded whole and sent as ``raw``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pyarrow as pa

from longmem_etl.api import localrows
from longmem_etl.api.pages import EXPORT_PAGE, FIELDS
from longmem_etl.arrays import strings
from longmem_etl.errors import APIError

_COLS = ("seq",) + FIELDS + ("metadata", "fidelity")


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
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: no Row object per memory
    cur.execute(
        f"SELECT {', '.join(_COLS)} FROM memories WHERE seq > ? ORDER BY seq LIMIT ?",
        (after, limit),
    )
    parts: list[pa.Table] = []
    n, last = 0, after
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


def _columns(conn: sqlite3.Connection, rows: list[tuple]) -> pa.Table:
    """Rows of `_COLS` -> an EXPORT_PAGE table (dirty rows decoded whole into ``raw``)."""
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    raw: list[str | None] = [None] * n
    dirty = [i for i, fid in enumerate(cols[-1]) if fid and '"raw"' in fid]
    if dirty:
        fields = [list(c) for c in cols[1:-1]]  # id .. metadata
        seqs = [rows[i][0] for i in dirty]
        full = conn.execute(
            f"SELECT * FROM memories WHERE seq IN ({','.join('?' * len(seqs))})", seqs
        ).fetchall()
        by_seq = {r["seq"]: r for r in full}
        for i in dirty:
            memory = localrows.decode(by_seq[rows[i][0]])
            if any(
                memory.get(f) is not None and not isinstance(memory.get(f), str) for f in FIELDS
            ):
                raw[i] = localrows.dumps(memory)
                for col in fields:
                    col[i] = None
        cols = [cols[0], *fields, cols[-1]]
    arrays = [strings(c) for c in cols[1:-1]] + [strings(raw)]
    return pa.Table.from_arrays(arrays, schema=EXPORT_PAGE)

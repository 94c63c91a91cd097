"""Export pages: the account's memories a page at a time, as Arrow, for readers that need only keys.

Why: verification, holdings and repair read the WHOLE target, and one ``export_account()`` held as
Python dicts was the migrate process's peak memory and most of its verification time. A page is an
Arrow table of the few fields those readers look at (`EXPORT_PAGE`), so a reader holds one page at
a time and does its work in DuckDB/Arrow instead of Python row loops.

A row says a memory in one of two ways:

- ``raw`` NULL: ``id``, ``collection``, ``container_tag``, ``created_at`` and ``text`` are the
  memory's own values (NULL when absent or null) and ``metadata`` is its metadata as JSON text
  (NULL when absent);
- ``raw`` set: the whole memory as JSON text (`jsonio`), because one of those fields is not a string
  (dirty seeded data). Readers decode such rows with the same Python rules as an exported dict.

``export_page(cursor=None, limit=PAGE_ROWS)`` returns ``{"memories": <EXPORT_PAGE table>, "next":
<cursor or None>}``; a reader calls it again with ``next`` until it is None, so each page is one
call, retried on its own. Pages are in export order; a memory that exists for the whole read is
returned exactly once (the embedded store pages by its insertion sequence, so a memory moved or
updated meanwhile keeps its place; memories added meanwhile may or may not appear). ``limit``
bounds a page, except where the API itself only exports whole: the SDK adapter returns its one
``export_account()`` as a single page.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from longmem_etl import jsonio
from longmem_etl.arrays import strings

PAGE_ROWS = 25_000
"""Default ``limit`` of one ``export_page`` call."""

FIRST_PAGE_ROWS = 50_000
MAX_PAGE_ROWS = 200_000
PAGE_BYTES = 32 << 20
"""How a reader of the whole account sizes its pages (`migrate.targetread`): every page is a round
trip it waits for, so it asks for ``FIRST_PAGE_ROWS`` first, then for as many rows as fit
``PAGE_BYTES`` of Arrow at the bytes per row seen so far (1,000 to ``MAX_PAGE_ROWS``). 200,000
short notes are 3 calls instead of 8; pages of long texts stay near ``PAGE_BYTES``."""

FIELDS = ("id", "collection", "container_tag", "created_at", "text")
EXPORT_PAGE = pa.schema(
    [(name, pa.string()) for name in FIELDS] + [("metadata", pa.string()), ("raw", pa.string())]
)


def page_of(memories: Iterable[dict[str, Any]]) -> pa.Table:
    """Exported memory dicts -> an `EXPORT_PAGE` table (what a backend without its own paged read,
    e.g. the SDK's one-call export, hands out)."""
    cols: dict[str, list[str | None]] = {name: [] for name in EXPORT_PAGE.names}
    for m in memories:
        clean = isinstance(m, dict) and all(
            m.get(f) is None or isinstance(m.get(f), str) for f in FIELDS
        )
        for f in FIELDS:
            cols[f].append(m.get(f) if clean else None)
        if clean:
            cols["metadata"].append(jsonio.dumps_str(m["metadata"]) if "metadata" in m else None)
            cols["raw"].append(None)
        else:
            cols["metadata"].append(None)
            cols["raw"].append(jsonio.dumps_str(m))
    return pa.Table.from_arrays([strings(cols[n]) for n in EXPORT_PAGE.names], schema=EXPORT_PAGE)

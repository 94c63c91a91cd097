"""The target read once, a page at a time, into an Arrow table of keys (`verify.TARGET_KEYS`).

Every reader of the whole target (migrate's verification, the holdings a fresh plan learns, the
standalone ``verify`` and ``verify --repair``) goes through `read_target_keys`, so they share one
cost profile and one set of rules:

- *Paged.* ``export_page`` (`api.pages`) is called until it has no ``next``; each page is one call,
  retried on its own within the caller's budget (`api.retry`), and the next page is fetched while
  the current one is turned into keys. Only one page (plus the one in flight) and the keys are held,
  never the account as dicts. A backend without ``export_page`` is exported whole and paged here.
- *Few, bounded pages.* Each page is one round trip the read waits for (the cursor of one is the
  request of the next), so pages are big: the first asks for `pages.FIRST_PAGE_ROWS`, each next
  one for as many rows as fit `pages.PAGE_BYTES` at the bytes per row seen so far (at most
  `pages.MAX_PAGE_ROWS`): an account of short notes is read in a few calls, one of long texts in
  pages that stay small in memory.
- *Vectorised.* The provenance marker is pulled out of each page's metadata JSON by DuckDB; Python
  touches only the rows DuckDB cannot say exactly (a field that is not a string, metadata given as
  a JSON string, a marker value that is not a plain string) and gives them the same keys the dict
  path (`verify.target_keys`) gives.
- *Fingerprints only where read.* The content fingerprint (NFC, whitespace, sha256) is computed for
  memories without a marker and, with ``own_key``, for those whose marker names another key; never
  for what is matched by marker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longmem_etl import jsonio
from longmem_etl.api.pages import (
    EXPORT_PAGE,
    FIELDS,
    FIRST_PAGE_ROWS,
    MAX_PAGE_ROWS,
    PAGE_BYTES,
    PAGE_ROWS,
    page_of,
)
from longmem_etl.api.retry import retry_read
from longmem_etl.arrays import int64s, strings
from longmem_etl.errors import Unsupported
from longmem_etl.migrate.keys import fingerprint
from longmem_etl.migrate.verify import TARGET_KEYS, target_keys

_FIELDS = ("source_id", "source", "migration", "content")


def _bad(x: str) -> str:
    """SQL: a marker value present that is neither null nor a JSON string."""
    return f"({x} IS NOT NULL AND {x} <> 'null' AND left({x}, 1) <> '\"')"


def _str(x: str) -> str:
    """SQL: a marker value (JSON text without escapes) as the string it says, NULL for null."""
    return (
        f"CASE WHEN {x} IS NULL OR {x} = 'null' THEN NULL ELSE substr({x}, 2, length({x}) - 2) END"
    )


def _escaped(x: str) -> str:
    """SQL: a marker value's JSON text holds an escape (a backslash)."""
    return f"contains({x}, '\\')"


_MARKER = '$."_longmem_etl"'
_KEYS_SQL = f"""
WITH m AS (
    -- one parse of each metadata text gives the marker's four fields (NULL where the marker
    -- is not an object); extracting the marker and then each field from its text parsed every
    -- marker five times and serialised it once (~2x slower)
    SELECT *,
        CASE WHEN raw IS NULL AND contains(metadata, '_longmem_etl') AND left(metadata, 1) = '{{'
             THEN json_extract(metadata, [{", ".join(f"'{_MARKER}.{f}'" for f in _FIELDS)}])::VARCHAR[]
        END AS x
    FROM p
),
v AS (
    SELECT *, {", ".join(f"x[{i + 1}] AS v_{f}" for i, f in enumerate(_FIELDS))}
    FROM m
),
f AS (
    SELECT *,
        -- rows DuckDB cannot say exactly go through the Python rules (see module docstring):
        -- a non-string field, marker text in metadata that is not an object (a JSON string is
        -- parsed again by those rules), an escape in a marker value (the text is cut, not
        -- decoded), a marker value not a string
        coalesce(raw IS NOT NULL
         OR (contains(metadata, '_longmem_etl') AND left(metadata, 1) <> '{{')
         OR {" OR ".join(_escaped(f"v_{f}") for f in _FIELDS)}
         OR {" OR ".join(_bad(f"v_{f}") for f in _FIELDS)}, false) AS slow,
        {_str("v_source_id")} AS sid,
        CASE WHEN v_source IS NOT NULL THEN {_str("v_source")} ELSE {_str("v_migration")} END AS mkey,
        {_str("v_content")} AS content
    FROM v
)
SELECT id AS target_id, coalesce(nullif(collection, ''), 'default') AS collection,
       container_tag, sid AS prov_source_id, mkey AS prov_key,
       CASE WHEN $detail THEN content END AS prov_content,
       CASE WHEN $detail THEN created_at END AS created_at, slow,
       ($fps AND NOT slow AND ($all OR sid IS NULL
                               OR ($own IS NOT NULL AND mkey IS DISTINCT FROM $own))) AS need_fp
FROM f
"""


def read_target_keys(
    target: Any,
    *,
    own_key: str | None = None,
    fingerprints: bool | str = True,
    stop: threading.Event | None = None,
    max_retries: int = 30,
    give_up_after: float | None = None,
    page_size: int | None = None,
    detail: bool = True,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """Keys of every memory in ``target`` (`verify.TARGET_KEYS`), from one paged read.

    ``own_key`` is the source key whose marked memories are matched by marker only (no
    fingerprint); ``fingerprints=False`` computes none (marker-only lookups), ``"all"`` every
    one (reconciliation without markers counts content as a multiset). ``page_size`` fixes every
    page's row limit (default: sized by bytes, see the module docstring). ``detail=False`` leaves
    ``prov_content`` and ``created_at`` NULL (verification counts without them: less to hold).
    ``con``: a warm DuckDB connection to use and leave open (`verifyprep`: connecting costs
    20-40 ms, which would otherwise come before the first page is even asked for)."""
    own = con is None
    if con is None:
        con = duckdb.connect()
    con.execute("SET threads = 1")  # a page is small work; every extra thread has its own arenas
    parts: list[pa.Table] = []
    try:
        for page in target_pages(target, stop, max_retries, give_up_after, page_size):
            parts.append(
                _keys_of_page(con, page, own_key=own_key, fingerprints=fingerprints, detail=detail)
            )
            del page
        keys = pa.concat_tables(parts) if parts else TARGET_KEYS.empty_table()
        del parts
        return _unique_ids(keys, con)  # the same connection: each new one costs ~20-40 ms
    finally:
        if own:
            con.close()


def target_pages(
    target: Any,
    stop: threading.Event | None,
    retries: int,
    give_up_after: float | None,
    fixed: int | None,
) -> Iterator[pa.Table]:
    """Each page of the target in order (`EXPORT_PAGE` tables), sized as the module docstring
    says (``fixed``: that many rows each); the next one is fetched while the caller works."""
    if not callable(getattr(target, "export_page", None)):
        yield from _export_whole(target, stop, retries, give_up_after, fixed or PAGE_ROWS)
        return
    seen = [0, 0]  # rows, bytes of the pages so far

    def fetch(cursor: str | None) -> dict[str, Any]:
        size = fixed if fixed is not None else page_rows(seen[0], seen[1])
        return retry_read(
            lambda: target.export_page(cursor=cursor, limit=size),
            stop=stop,
            retries=retries,
            give_up_after=give_up_after,
        )

    try:
        first = fetch(None)
    except Unsupported:
        yield from _export_whole(target, stop, retries, give_up_after, fixed or PAGE_ROWS)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-page") as pool:
        page = first
        while True:
            cursor = page.get("next")
            table = page["memories"]
            seen[0] += table.num_rows
            seen[1] += table.nbytes
            ahead = pool.submit(fetch, cursor) if cursor else None
            del page
            yield table
            del table
            if ahead is None:
                return
            page = ahead.result()


def page_rows(rows_seen: int, bytes_seen: int) -> int:
    """The next page's row limit: `pages.FIRST_PAGE_ROWS` first, then what fits `pages.PAGE_BYTES`
    at the Arrow bytes per row seen so far (1,000 to `pages.MAX_PAGE_ROWS`)."""
    if rows_seen == 0:
        return FIRST_PAGE_ROWS
    per_row = max(1, bytes_seen // rows_seen)
    return max(1_000, min(MAX_PAGE_ROWS, PAGE_BYTES // per_row))


def _export_whole(
    target: Any, stop: threading.Event | None, retries: int, give_up_after: float | None, size: int
) -> Iterator[pa.Table]:
    """A backend without pages: one ``export_account()``, turned into pages as it is dropped."""
    dump = retry_read(
        target.export_account, stop=stop, retries=retries, give_up_after=give_up_after
    )
    memories = dump.get("memories") or []
    del dump
    for start in range(0, len(memories), size):
        yield page_of(memories[start : start + size])
        memories[start : start + size] = [None] * len(memories[start : start + size])


def _keys_of_page(
    con: duckdb.DuckDBPyConnection,
    page: pa.Table,
    *,
    own_key: str | None,
    fingerprints: bool | str,
    detail: bool = True,
) -> pa.Table:
    """One page -> its key rows (fast rows in DuckDB; the rest through `verify.target_keys`)."""
    if page.num_rows == 0:
        return TARGET_KEYS.empty_table()
    page = page.select(EXPORT_PAGE.names).cast(EXPORT_PAGE)
    con.register("p", page)
    try:
        k = con.sql(
            _KEYS_SQL,
            params={
                "own": own_key,
                "fps": bool(fingerprints),
                "all": fingerprints == "all",
                "detail": detail,
            },
        ).to_arrow_table()
    finally:
        con.unregister("p")
    slow = k.column("slow").combine_chunks()
    fast = slow.true_count == 0
    if not fast:
        k, page_fast = k.filter(pc.invert(slow)), page.filter(pc.invert(slow))
    else:
        page_fast = page
    out = pa.table(
        [
            k.column("target_id"),
            k.column("collection"),
            k.column("container_tag"),
            _fingerprints(k.column("need_fp").combine_chunks(), page_fast),
            k.column("prov_source_id"),
            k.column("prov_key"),
            k.column("prov_content"),
            k.column("created_at"),
        ],
        schema=TARGET_KEYS,
    )
    if fast:
        return out
    rows = page.filter(slow).to_pylist()
    memories = [_memory(r) for r in rows]
    slow_keys = target_keys(memories, own_key=own_key, fingerprints=bool(fingerprints))
    if fingerprints == "all":
        slow_keys = slow_keys.set_column(3, "fp", strings([_fp_of(m) for m in memories]))
    if not detail:
        for i in (6, 7):
            slow_keys = slow_keys.set_column(
                i, TARGET_KEYS.field(i), pa.nulls(slow_keys.num_rows, pa.string())
            )
    return pa.concat_tables([out, slow_keys])


def _fp_of(m: dict[str, Any]) -> str:
    """`verify.target_keys`' fingerprint of one exported memory."""
    return fingerprint(m.get("collection") or "default", m.get("container_tag"), m.get("text"))


def _memory(row: dict[str, Any]) -> dict[str, Any]:
    """A slow row as the dict an export would have given."""
    if row["raw"] is not None:
        value = jsonio.loads(row["raw"])
        return value if isinstance(value, dict) else {}
    memory = {f: row[f] for f in FIELDS}
    if row["metadata"] is not None:
        memory["metadata"] = jsonio.loads(row["metadata"])
    return memory


def _fingerprints(need: pa.Array, page: pa.Table) -> pa.ChunkedArray:
    """The ``fp`` column: computed (in Python, the one exact rule) only where ``need``."""
    n = need.true_count
    if n == 0:
        return pa.chunked_array([pa.nulls(len(need), pa.string())])
    wanted = page.filter(need).select(["collection", "container_tag", "text"])
    fps = [
        fingerprint(c, t, x)
        for c, t, x in zip(
            wanted.column(0).to_pylist(),
            wanted.column(1).to_pylist(),
            wanted.column(2).to_pylist(),
            strict=True,
        )
    ]
    if n == len(need):
        return pa.chunked_array([strings(fps)])
    base = pa.nulls(len(need), pa.string())
    return pa.chunked_array([pc.replace_with_mask(base, need, strings(fps))])


def _unique_ids(keys: pa.Table, con: duckdb.DuckDBPyConnection) -> pa.Table:
    """One row per target id (a backend's pages could show a memory twice; the first counts)."""
    ids = keys.column("target_id")
    n_ids = keys.num_rows - ids.null_count
    if n_ids == 0:
        return keys
    # distinct 64-bit hashes prove distinct ids (8 bytes a row; an Arrow count_distinct of the
    # strings peaked at 32 MB that the memory pool then kept); equal hashes, a copy or a
    # collision, take the exact path
    con.register("ids", keys.select(["target_id"]))
    h = con.sql("SELECT hash(target_id) AS h FROM ids WHERE target_id IS NOT NULL").fetchnumpy()[
        "h"
    ]
    con.unregister("ids")
    h.sort()
    if not (h[1:] == h[:-1]).any():
        return keys
    con.register("k", keys.append_column("_i", int64s(np.arange(keys.num_rows))))
    try:
        return (
            con.sql(
                "SELECT * EXCLUDE (_i) FROM k WHERE target_id IS NULL OR _i IN "
                "(SELECT min(_i) FROM k WHERE target_id IS NOT NULL GROUP BY target_id) ORDER BY _i"
            )
            .to_arrow_table()
            .cast(TARGET_KEYS)
        )
    finally:
        con.unregister("k")

"""Per-memory content hashes: how an increment finds what changed without re-reading content.

Every snapshot this version writes carries ``memory_hashes.parquet``: for each row of its memory
file (``memories.parquet``, or an increment's ``changed_memories.parquet``), in the same order
(the ids are that file's), ``md5`` = the 16-byte MD5 digest of the row's *canonical serialisation*:

- every column of the memories table, in schema order (``id`` included, so a digest names one
  memory in one state);
- a NULL is ``~`` and nothing else;
- a string column (text, metadata, extra, ...) is ``<byte length>:<UTF-8 bytes>``;
- a timestamp is its microseconds since the epoch in decimal, a double DuckDB's shortest
  round-trip text (``-0.0`` and ``0.0`` differ; every NaN is ``nan``), a boolean ``true`` /
  ``false``; each followed by ``;``.

The length prefixes make the serialisation injective: two rows that differ in any column (one
character, NULL vs ``""``, a reordered metadata object - metadata is kept as the dump's own JSON
bytes) serialise differently. Two different serialisations share a digest with probability
2^-128 for a pair; over a 10M-memory state against its parent that is below 10^-24 (birthday
bound n^2 / 2^129), far below the chance of an undetected disk error. MD5's known weakness is
*chosen* collisions: someone who can put two crafted memories in one account could make an edit
invisible to one increment, and would gain nothing else (the next full snapshot, written at
least every ``--full-every`` increments, stores every row again).

The digest is computed by DuckDB (``md5``) over Arrow batches, never by DuckDB's ``hash()`` (64
bits, not stable across versions). ``ALGORITHM`` names the definition in each manifest
(``row_hashes``); a snapshot without it (written before hashes existed, or by a future
definition) still works as a parent: its digests are computed from its content once, in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

HASHES = "memory_hashes.parquet"
ALGORITHM = "md5-len-prefixed-columns-v1"
# one column: the ids are the memory file's, row for row (storing them again cost ~20 B a row)
HASHES_SCHEMA = pa.schema([pa.field("md5", pa.binary(16), nullable=False)])
# digests do not compress: stored plain, which also spares the writer the work
HASHES_OPTIONS: dict[str, Any] = {"compression": "none", "use_dictionary": False}


def canonical_sql() -> str:
    """The SQL expression of a memories row's canonical serialisation (module doc)."""
    from longmem_etl.schema import MEMORIES_SCHEMA

    parts = []
    for f in MEMORIES_SCHEMA:
        c = f'"{f.name}"'
        if pa.types.is_string(f.type):
            parts.append(f"coalesce(CAST(strlen({c}) AS VARCHAR), '~'), ':', {c}")
        elif pa.types.is_timestamp(f.type):
            parts.append(f"coalesce(CAST(epoch_us({c}) AS VARCHAR), '~'), ';'")
        else:
            parts.append(f"coalesce(CAST({c} AS VARCHAR), '~'), ';'")
    return "concat(" + ", ".join(parts) + ")"


def digest_sql() -> str:
    """The SQL expression of a row's digest (a 16-byte BLOB)."""
    return f"unhex(md5({canonical_sql()}))"


def digests(con: Any, table: pa.Table) -> pa.FixedSizeBinaryArray:
    """The digest of every row of ``table`` (memories schema), in order, computed on ``con``."""
    con.register("_rowhash_batch", table)
    try:
        out = con.sql(f"SELECT {digest_sql()} AS md5 FROM _rowhash_batch").to_arrow_table()
    finally:
        con.unregister("_rowhash_batch")
    return as_fixed(out.column("md5"))


def as_fixed(col: pa.ChunkedArray | pa.Array) -> pa.FixedSizeBinaryArray:
    """A BLOB column of 16-byte digests as one ``binary(16)`` array."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not col.type.equals(pa.binary(16)):
        col = col.cast(pa.binary(16))
    return col


def words(col: pa.FixedSizeBinaryArray) -> tuple[np.ndarray, np.ndarray]:
    """The digests as two uint64 arrays (first and last 8 bytes, native order): NumPy sorts and
    searches those far faster than 16-byte strings. Equal digests give equal pairs and only them."""
    n = len(col)
    if n == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, empty
    buf = col.buffers()[1]
    raw = np.frombuffer(buf, dtype=np.uint64, count=2 * (col.offset + n))[2 * col.offset :]
    pairs = raw.reshape(n, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def hashes_table(md5: pa.FixedSizeBinaryArray) -> pa.Table:
    """A ``memory_hashes.parquet`` batch."""
    return pa.Table.from_arrays([md5], schema=HASHES_SCHEMA)


def has_hashes(manifest: dict[str, Any]) -> bool:
    """Whether a (plaintext) manifest lists a hash file of this version's definition."""
    info = manifest.get("row_hashes")
    return (
        isinstance(info, dict)
        and info.get("algorithm") == ALGORITHM
        and HASHES in (manifest.get("files") or {})
    )


def manifest_entry() -> dict[str, str]:
    """What a manifest records about its hash file."""
    return {"file": HASHES, "algorithm": ALGORITHM}


def layer_sql(plain: Path, manifest: dict[str, Any], memory_file: str, full: bool) -> str:
    """``SELECT id, md5, _seq`` of one snapshot's own rows: from its hash file when it has one
    (no content read), else computed from ``memory_file`` (an older snapshot). ``full``: the
    file is a full snapshot's ``memories.parquet``, whose ``_seq`` is the row number; else an
    increment's changes, which carry ``_seq``."""
    from longmem_etl.sqlquote import sql_str

    mem = sql_str(str(plain / memory_file))
    seq = "CAST(file_row_number AS DOUBLE)" if full else "_seq"
    if not has_hashes(manifest):
        return (
            f"SELECT id, {digest_sql()} AS md5, {seq} AS _seq "
            f"FROM read_parquet({mem}, file_row_number = true)"
        )
    h = sql_str(str(plain / HASHES))
    seq = "CAST(r AS DOUBLE)" if full else "_seq"
    return (
        f"SELECT m.id, h.md5, {seq} AS _seq FROM "
        f"(SELECT file_row_number AS r, md5 FROM read_parquet({h}, file_row_number = true)) h "
        f"JOIN (SELECT file_row_number AS r, id{'' if full else ', _seq'} "
        f"FROM read_parquet({mem}, file_row_number = true)) m USING (r)"
    )


__all__ = [
    "ALGORITHM",
    "HASHES",
    "HASHES_OPTIONS",
    "HASHES_SCHEMA",
    "as_fixed",
    "canonical_sql",
    "digest_sql",
    "digests",
    "has_hashes",
    "hashes_table",
    "layer_sql",
    "manifest_entry",
    "words",
]

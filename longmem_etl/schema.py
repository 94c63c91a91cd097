"""The one definition of the snapshot tables: field names, Arrow types, and what is lossless.

`schemas/*.schema.json` describe the same tables for people and other tools; tests check that they
agree with the Arrow schemas here, so this module and those files cannot drift apart.

How a dump memory maps to a row (`docs/snapshots.md`):
- every *known* field has a typed column (timestamps as ``timestamp[us, tz=UTC]``);
- ``metadata`` is kept as JSON text (DuckDB reads it as ``JSON``), exactly as the dump wrote it;
- ``extra`` is a JSON object of every unknown field, values kept as the dump wrote them;
- ``fidelity`` is NULL except for the rare rows whose typed columns cannot say everything: it is a
  JSON object ``{"absent": [known fields missing from the dump row], "raw": {field: original JSON
  value}}`` (e.g. a timestamp with nanoseconds, an importance too big for a double). Dumping a row
  applies it, which is what makes dump -> snapshot -> dump lossless key for key.
"""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = 1
"""The ``format_version`` of dumps and snapshot manifests written by this toolkit."""

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Known memory fields, in dump order, with their Arrow types.
MEMORY_FIELDS: dict[str, pa.DataType] = {
    "id": pa.string(),
    "collection": pa.string(),
    "text": pa.string(),
    "importance": pa.float64(),
    "category": pa.string(),
    "metadata": pa.string(),  # JSON text
    "source": pa.string(),
    "container_tag": pa.string(),
    "pinned": pa.bool_(),
    "archived": pa.bool_(),
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    "expires_at": TIMESTAMP,
    "superseded_by": pa.string(),
}
KNOWN_MEMORY_FIELDS: frozenset[str] = frozenset(MEMORY_FIELDS)
TIMESTAMP_FIELDS: tuple[str, ...] = ("created_at", "updated_at", "expires_at")

MEMORIES_SCHEMA = pa.schema(
    [pa.field("id", pa.string(), nullable=False)]
    + [pa.field(name, typ) for name, typ in MEMORY_FIELDS.items() if name != "id"]
    + [
        pa.field("extra", pa.string()),  # JSON object of unknown fields, NULL when none
        pa.field("fidelity", pa.string()),  # JSON, NULL when the typed columns say everything
    ]
)

# A collection in a dump may be a string or an object; `raw` keeps it exactly, `name` is for SQL.
COLLECTIONS_SCHEMA = pa.schema(
    [
        pa.field("position", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("raw", pa.string(), nullable=False),  # JSON value as in the dump
    ]
)

# Rows that did not make it: from `convert` (stage "convert") or removed by a transform step
# (stage = the step's name). `raw` is the row's JSON so nothing is ever lost.
REJECTED_SCHEMA = pa.schema(
    [
        pa.field(
            "row_index", pa.int64()
        ),  # position in the input (dump memories list / step input)
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("id", pa.string()),
        pa.field("raw", pa.string(), nullable=False),
    ]
)

SNAPSHOT_FILES = ("memories.parquet", "collections.parquet", "rejected.parquet", "manifest.json")

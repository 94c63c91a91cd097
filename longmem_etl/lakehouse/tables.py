"""The Iceberg tables ``publish`` keeps: ``NS.memories``, ``NS.collections``, ``NS.rejected``.

Each is the snapshot table of the same name (``longmem_etl/schema.py``) with ``tenant`` and
``snapshot`` first, like the warehouse's views: ``tenant`` is the exact tenant name (the manifest's),
``snapshot`` the snapshot's UTC name (``20261130T120000Z``). Field ids are fixed here (1, 2, then
the snapshot columns in order), so a table this module made is recognised by its columns, and a
table of the same name with other columns is refused rather than appended to.

Tables are partitioned by ``identity(tenant)``, so engines prune by tenant. ``tenant`` and
``snapshot`` keep full (untruncated) column bounds in the manifests: a data file of one append
holds one ``(tenant, snapshot)``, which lets ``publish`` see what the live data already holds even
after the Iceberg snapshots that appended it were expired (``publish.published``).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from longmem_etl.errors import BadInput
from longmem_etl.schema import COLLECTIONS_SCHEMA, MEMORIES_SCHEMA, REJECTED_SCHEMA

TABLES: dict[str, pa.Schema] = {
    "memories": MEMORIES_SCHEMA,
    "collections": COLLECTIONS_SCHEMA,
    "rejected": REJECTED_SCHEMA,
}
KEY_COLUMNS = ("tenant", "snapshot")
NO_RETRIES = "commit.retry.num-retries"
PARTITION_FIELD_ID = 1000
TABLE_PROPERTIES = {
    "write.metadata.metrics.column.tenant": "full",
    "write.metadata.metrics.column.snapshot": "full",
    "longmem-etl.table": "1",  # marks a table publish created (informational)
    # pyiceberg (like Spark) re-applies a conflicting append on the new table state by itself,
    # which would append a snapshot a concurrent publish already appended. publish handles the
    # conflict: it re-reads the table's journal, then skips or retries (``publish._append``).
    NO_RETRIES: "0",
}


def _iceberg_type(typ: pa.DataType) -> Any:
    from pyiceberg import types as it

    if pa.types.is_timestamp(typ):
        return it.TimestamptzType() if typ.tz else it.TimestampType()
    mapping = {
        pa.string(): it.StringType(),
        pa.large_string(): it.StringType(),
        pa.float64(): it.DoubleType(),
        pa.bool_(): it.BooleanType(),
        pa.int64(): it.LongType(),
        pa.int32(): it.IntegerType(),
    }
    if typ not in mapping:
        raise TypeError(f"no Iceberg type for {typ}")
    return mapping[typ]


def iceberg_schema(table: str) -> Any:
    """The Iceberg schema of ``table``: ``tenant``, ``snapshot`` (required), then its columns."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType

    fields = [
        NestedField(1, "tenant", StringType(), required=True),
        NestedField(2, "snapshot", StringType(), required=True),
    ]
    for i, f in enumerate(TABLES[table], start=3):
        fields.append(NestedField(i, f.name, _iceberg_type(f.type), required=not f.nullable))
    return Schema(*fields)


def partition_spec() -> Any:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    return PartitionSpec(
        PartitionField(
            source_id=1, field_id=PARTITION_FIELD_ID, transform=IdentityTransform(), name="tenant"
        )
    )


def _columns(schema: Any) -> list[tuple[str, str, bool]]:
    return [(f.name, str(f.field_type), f.required) for f in schema.fields]


def check_schema(identifier: str, table: Any, name: str) -> None:
    """BadInput when an existing table's columns are not the ones ``publish`` writes."""
    want, have = _columns(iceberg_schema(name)), _columns(table.schema())
    if want == have:
        return
    missing = [c[0] for c in want if c not in have]
    other = [c[0] for c in have if c not in want]
    detail = []
    if missing:
        detail.append("lacks " + ", ".join(missing[:5]))
    if other:
        detail.append("has other columns " + ", ".join(other[:5]))
    raise BadInput(
        f"Iceberg table {identifier} exists with a schema publish did not write "
        f"({'; '.join(detail) or 'columns in another order'}); choose another --namespace"
    )


def _namespace_exists(catalog: Any, namespace: str) -> bool:
    from pyiceberg.exceptions import NoSuchNamespaceError

    try:
        catalog.load_namespace_properties(namespace)
    except NoSuchNamespaceError:
        return False
    return True


def ensure_tables(catalog: Any, namespace: str) -> dict[str, Any]:
    """The three tables of ``namespace``: every existing one loaded and checked first (so a
    foreign table is refused before anything is created), then the missing ones created with our
    schema and partitioning; safe when two publishes create them at once."""
    tables: dict[str, Any] = {}
    for name in TABLES:
        identifier = f"{namespace}.{name}"
        if catalog.table_exists(identifier):
            tables[name] = catalog.load_table(identifier)
            check_schema(identifier, tables[name], name)
    try:
        catalog.create_namespace(namespace)
    except Exception:  # made earlier or by a concurrent run (a SQL catalog may say IntegrityError)
        if not _namespace_exists(catalog, namespace):
            raise
    for name in TABLES:
        if name in tables:
            continue
        identifier = f"{namespace}.{name}"
        try:
            tables[name] = catalog.create_table(
                identifier,
                schema=iceberg_schema(name),
                partition_spec=partition_spec(),
                properties=TABLE_PROPERTIES,
            )
        except Exception:  # another publish made it in between (TableAlreadyExists, IntegrityError)
            if not catalog.table_exists(identifier):
                raise
            tables[name] = catalog.load_table(identifier)
            check_schema(identifier, tables[name], name)
    for name, table in tables.items():
        if table.metadata.properties.get(NO_RETRIES) != "0":  # e.g. an admin reset it
            tables[name] = _own_retries(table)
    return {name: tables[name] for name in TABLES}


def _own_retries(table: Any) -> Any:
    """Set ``commit.retry.num-retries = 0`` on a table (see ``TABLE_PROPERTIES``); a concurrent
    run setting it first is fine."""
    from pyiceberg.exceptions import CommitFailedException

    for _ in range(5):
        try:
            with table.transaction() as tx:
                tx.set_properties({NO_RETRIES: "0"})
            return table
        except CommitFailedException:
            table.refresh()
            if table.metadata.properties.get(NO_RETRIES) == "0":
                return table
    raise BadInput(f"Iceberg table {table.name()}: could not set {NO_RETRIES}=0 (busy); retry")


def to_iceberg_arrow(name: str, data: pa.Table, tenant: str, snapshot: str) -> pa.Table:
    """``data`` (a snapshot file's rows) with ``tenant``/``snapshot`` first, cast to the Arrow
    form of the Iceberg schema (so required columns are non-nullable and ids line up)."""
    target = iceberg_schema(name).as_arrow()
    n = data.num_rows
    columns = [
        pa.repeat(pa.scalar(tenant, pa.large_string()), n),
        pa.repeat(pa.scalar(snapshot, pa.large_string()), n),
    ]
    for f in TABLES[name]:
        if f.name in data.column_names:
            columns.append(data.column(f.name))
        else:  # an older snapshot without this column: NULLs (only nullable columns can be absent)
            columns.append(pa.nulls(n, f.type))
    table = pa.Table.from_arrays(columns, names=[f.name for f in target])
    return table.cast(target)

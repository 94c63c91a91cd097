"""``IcebergCatalog``: which Iceberg catalog and warehouse the ``iceberg_tables`` asset writes to.

Offline default: a SQLite SQL catalog and a warehouse directory under the state dir
(``{home}/iceberg/catalog.db``, ``{home}/iceberg/warehouse``). A deployment sets
``LONGMEM_ETL_ICEBERG_CATALOG`` (``sqlite:///``, ``postgresql://`` or ``https://`` REST),
``LONGMEM_ETL_ICEBERG_WAREHOUSE`` (a directory or ``s3://BUCKET/PREFIX``) and
``LONGMEM_ETL_ICEBERG_NAMESPACE``. Credentials never go in these fields: the S3 keys come from the
AWS chain, a REST catalog's token or credential from ``PYICEBERG_CATALOG__LONGMEM__TOKEN`` /
``__CREDENTIAL`` (read by pyiceberg in the run worker), a Postgres password from ``PGPASSFILE``.
"""

from __future__ import annotations

from dagster import ConfigurableResource

from pipelines.resources import render

DEFAULT_CATALOG = "sqlite:///{home}/iceberg/catalog.db"
DEFAULT_WAREHOUSE = "{home}/iceberg/warehouse"
DEFAULT_NAMESPACE = "longmem"


class IcebergCatalog(ConfigurableResource):
    """An Iceberg catalog URI, a warehouse and the namespace of the backup tables (the cleaned
    snapshots go to ``<namespace>_clean``)."""

    catalog: str = DEFAULT_CATALOG
    warehouse: str = DEFAULT_WAREHOUSE
    namespace: str = DEFAULT_NAMESPACE

    def catalog_uri(self) -> str:
        return render(self.catalog)

    def warehouse_path(self) -> str:
        return render(self.warehouse)

    def display_catalog(self) -> str:
        """The catalog URI without user-info or query: fit for metadata."""
        from longmem_etl.lakehouse.catalog import safe_uri

        return safe_uri(self.catalog_uri())

"""The lakehouse: Apache Iceberg tables kept in step with a snapshot root (``publish``).

``catalog`` opens the catalog a URI names, ``tables`` defines the tables and their partitioning,
``publish`` appends what the tables do not hold yet (`docs/lakehouse.md`)."""

"""The lakehouse domain's Definitions: the ``iceberg_tables`` asset.
Merged with the other domains in ``pipelines/definitions.py``."""

from dagster import Definitions

from pipelines.lakehouse.assets import iceberg_tables

defs = Definitions(assets=[iceberg_tables])

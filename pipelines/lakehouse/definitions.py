"""The lakehouse domain's Definitions: the ``iceberg_tables`` asset and the sensor that runs it
after each backup or clean. Merged with the other domains in ``pipelines/definitions.py``."""

from dagster import Definitions

from pipelines.lakehouse.assets import iceberg_tables
from pipelines.lakehouse.sensors import publish_after_backup_or_clean

defs = Definitions(assets=[iceberg_tables], sensors=[publish_after_backup_or_clean])

"""The analysis domain's Definitions: cleaned snapshots, the per-tenant warehouse and their checks.
Merged with the other domains in ``pipelines/definitions.py``."""

from dagster import Definitions

from pipelines.analysis.assets import memories_clean, warehouse
from pipelines.analysis.checks import analysis_checks

defs = Definitions(assets=[memories_clean, warehouse], asset_checks=analysis_checks)

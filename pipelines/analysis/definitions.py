"""The analysis domain's Definitions: cleaned snapshots, the per-tenant warehouse, the analyst
report and their checks.
Merged with the other domains in ``pipelines/definitions.py``."""

from dagster import Definitions

from pipelines.analysis.assets import memories_clean, warehouse
from pipelines.analysis.checks import analysis_checks
from pipelines.analysis.report import memories_report

defs = Definitions(
    assets=[memories_clean, warehouse, memories_report], asset_checks=analysis_checks
)

"""The whole code location: the backup, analysis and migration domains' Definitions, merged with
the shared resources and executor (as dagster-open-platform composes its domains).

Runs on the multiprocess executor by default (one process per step, ``$LONGMEM_ETL_MAX_CONCURRENT``
at once; ``LONGMEM_ETL_EXECUTOR=in_process`` runs every step in the run's own process, for quick
local runs and tests). A deployment swaps the run launcher / executor in its own config without
touching this file (docs/dagster.md).
"""

from __future__ import annotations

import os

from dagster import Definitions, ExecutorDefinition, in_process_executor, multiprocess_executor

from pipelines.analysis.definitions import defs as analysis_defs
from pipelines.backup.definitions import defs as backup_defs
from pipelines.lakehouse.definitions import defs as lakehouse_defs
from pipelines.migration.definitions import defs as migration_defs
from pipelines.resources import default_resources

DOMAINS = (backup_defs, analysis_defs, migration_defs, lakehouse_defs)
"""Each domain package owns its Definitions (``<domain>/definitions.py``): a new asset, check, job,
schedule or sensor is added there, and only resources and the executor are decided here."""
ASSETS = [asset for domain in DOMAINS for asset in domain.assets or ()]
CHECKS = [check for domain in DOMAINS for check in domain.asset_checks or ()]


def build_defs() -> Definitions:
    """Merge the domains with the shared resources and executor (read from the environment now)."""
    shared = Definitions(resources=default_resources(), executor=default_executor())
    return Definitions.merge(*DOMAINS, shared)


def default_executor() -> ExecutorDefinition:
    """multiprocess (default, optionally capped) or in_process, from the environment."""
    if os.environ.get("LONGMEM_ETL_EXECUTOR", "multiprocess") == "in_process":
        return in_process_executor
    max_concurrent = int(os.environ.get("LONGMEM_ETL_MAX_CONCURRENT", "0")) or None
    if max_concurrent:
        return multiprocess_executor.configured({"max_concurrent": max_concurrent})
    return multiprocess_executor


defs = build_defs()

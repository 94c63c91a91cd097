"""Dagster definitions for longmem-etl: ``dagster dev -m pipelines`` (see docs/dagster.md).

Thin wrappers over the library: every asset calls the same ``longmem_etl`` functions as the CLI.
"""

from pipelines.definitions import defs

__all__ = ["defs"]

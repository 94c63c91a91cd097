"""Resumable, exactly-once migrations: plan -> journal -> uploader -> reconcile -> verify.

Public calls (the CLI verbs and the Dagster assets use these):
- `run_migration(MigrationOptions) -> MigrationResult` (also `--dry-run` via ``options.dry_run``);
- `migration_status(journal_path) -> dict`;
- `verify_source_target(source, target, ...) -> VerificationReport`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that `longmem-etl --help` and light callers do not pay for DuckDB/pyarrow.
_EXPORTS = {
    "MigrationOptions": "longmem_etl.migrate.engine",
    "MigrationResult": "longmem_etl.migrate.engine",
    "PROVENANCE_KEY": "longmem_etl.migrate.keys",
    "VerificationReport": "longmem_etl.migrate.verify",
    "migration_status": "longmem_etl.migrate.engine",
    "run_migration": "longmem_etl.migrate.engine",
    "stop_on_signals": "longmem_etl.migrate.engine",
    "verify_source_target": "longmem_etl.migrate.verifying",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)

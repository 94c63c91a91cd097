"""Resumable, exactly-once migrations: plan -> journal -> uploader -> reconcile -> verify.

Public calls (the CLI verbs and the Dagster assets use these):
- `run_migration(MigrationOptions) -> MigrationResult` (also `--dry-run` via ``options.dry_run``);
- `migration_status(journal_path) -> dict`;
- `verify_source_target(source, target, ...) -> VerificationReport`.
"""

from longmem_etl.migrate.engine import (
    MigrationOptions,
    MigrationResult,
    migration_status,
    run_migration,
    stop_on_signals,
)
from longmem_etl.migrate.keys import PROVENANCE_KEY
from longmem_etl.migrate.verify import VerificationReport
from longmem_etl.migrate.verifying import verify_source_target

__all__ = [
    "PROVENANCE_KEY",
    "MigrationOptions",
    "MigrationResult",
    "VerificationReport",
    "migration_status",
    "run_migration",
    "stop_on_signals",
    "verify_source_target",
]

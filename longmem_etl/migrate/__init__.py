"""Resumable, exactly-once migrations: plan -> journal -> uploader -> reconcile -> verify.

Public calls (the CLI verbs and the Dagster assets use these):
- `run_migration(MigrationOptions) -> MigrationResult` (also `--dry-run` via ``options.dry_run``);
- `migration_status(journal_path) -> dict`;
- `verify_source_target(source, target, ...) -> VerificationReport`.
"""

from __future__ import annotations

from longmem_etl._lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)

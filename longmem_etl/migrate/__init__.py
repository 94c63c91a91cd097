"""Resumable, exactly-once migrations: plan -> journal -> uploader -> reconcile -> verify.

Public calls (the CLI verbs and the Dagster assets use these):
- `run_migration(MigrationOptions) -> MigrationResult` (also `--dry-run` via ``options.dry_run``);
- `migration_status(journal_path) -> dict`;
- `list_migrations()` -> every journal under the state home (`state.state_home`);
- `verify_source_target(source, target, ...) -> VerificationReport`;
- `repair_duplicates(source, target, ...)` -> delete extra copies carrying the source's marker;
- `which_held(items, target_memories, source_key=...)` -> which source items the target holds.
"""

from __future__ import annotations

from longmem_etl._lazy import lazy_exports

_EXPORTS = {
    "MigrationOptions": "longmem_etl.migrate.engine",
    "MigrationResult": "longmem_etl.migrate.engine",
    "PROVENANCE_KEY": "longmem_etl.migrate.keys",
    "VerificationReport": "longmem_etl.migrate.verify",
    "list_migrations": "longmem_etl.migrate.status",
    "migration_status": "longmem_etl.migrate.status",
    "repair_duplicates": "longmem_etl.migrate.repair",
    "state_home": "longmem_etl.migrate.state",
    "which_held": "longmem_etl.migrate.holdings",
    "run_migration": "longmem_etl.migrate.engine",
    "stop_on_signals": "longmem_etl.migrate.engine",
    "verify_source_target": "longmem_etl.migrate.verifying",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)

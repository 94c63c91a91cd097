"""`verify --source S --target URI`: the standalone check, on any source the migrator accepts."""

from __future__ import annotations

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.migrate import source as sources
from longmem_etl.migrate.reconcile import export_target
from longmem_etl.migrate.verify import VerificationReport, compare, source_keys, target_keys


def verify_source_target(
    source: str,
    target: str,
    *,
    spec: str | None = None,
    migration_id: str | None = None,
    source_key_env: str = DEFAULT_KEY_ENV,
    target_key_env: str = DEFAULT_KEY_ENV,
) -> VerificationReport:
    """Freeze ``source`` (temporarily; cleaned with ``spec`` if given), export ``target`` once and
    compare per collection and container tag. ``migration_id`` scopes the check to one migration."""
    target_api = sources.open_target(target, key_env=target_key_env, create=False)
    with sources.frozen_temporarily(source, spec=spec, key_env=source_key_env) as frozen:
        skeys = source_keys(frozen.memories())
    dump = export_target(target_api)
    return compare(skeys, target_keys(dump.get("memories") or []), migration_id=migration_id)

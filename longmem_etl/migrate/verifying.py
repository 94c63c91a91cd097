"""`verify --source S --target URI`: the standalone check, on any source the migrator accepts."""

from __future__ import annotations

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.migrate import source as sources
from longmem_etl.migrate.reconcile import export_target
from longmem_etl.migrate.verify import VerificationReport, compare, source_keys, target_keys


def source_key_of(source: str, *, copy: str | None = None, key_env: str = DEFAULT_KEY_ENV) -> str:
    """The key this source's markers carry (what `migrate` would use, with the same ``copy``)."""
    return sources.source_key(sources.stable_source_identity(source, key_env=key_env), copy)


def verify_source_target(
    source: str,
    target: str,
    *,
    spec: str | None = None,
    migration_id: str | None = None,
    scoped: bool = False,
    copy: str | None = None,
    foreign_copies: bool | None = None,
    source_key_env: str = DEFAULT_KEY_ENV,
    target_key_env: str = DEFAULT_KEY_ENV,
) -> VerificationReport:
    """Freeze ``source`` (temporarily; cleaned with ``spec`` if given), export ``target`` once and
    compare per collection and container tag.

    ``scoped`` (or an explicit source key in ``migration_id``) limits the check to this source:
    unrelated target memories are not "extra", while copies of source memories made under any other
    key (another copy name, an older version's markers) still count as duplicated — unless
    ``foreign_copies=False``. Plain (unscoped) verify counts every target memory."""
    target_api = sources.open_target(target, key_env=target_key_env, create=False)
    if scoped and migration_id is None:
        migration_id = source_key_of(source, copy=copy, key_env=source_key_env)
    if foreign_copies is None:
        foreign_copies = copy is None
    with sources.frozen_temporarily(source, spec=spec, key_env=source_key_env) as frozen:
        skeys = source_keys(frozen.memories())
    dump = export_target(target_api)
    return compare(
        skeys,
        target_keys(dump.get("memories") or []),
        migration_id=migration_id,
        foreign_copies=foreign_copies,
    )

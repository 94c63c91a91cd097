"""The Python face of the CLI verbs: ``longmem_etl.convert(...)`` is ``longmem-etl convert``.

Each function is the same library call its verb makes (the CLI only parses flags and prints), with
the verb's name, so a script or notebook needs no knowledge of the package layout. Every result has
``to_json()`` (what ``--json`` prints) and ``render()`` (what the verb prints to a terminal).
Errors are the toolkit's own: ``BadInput`` (the CLI's exit 2), ``Incomplete`` (exit 3).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longmem_etl.api.keys import DEFAULT_KEY_ENV

if TYPE_CHECKING:
    import duckdb

    from longmem_etl.backup import BackupResult
    from longmem_etl.lakehouse.publish import PublishResult
    from longmem_etl.migrate.engine import MigrationResult
    from longmem_etl.migrate.verify import VerificationReport
    from longmem_etl.restore import RestoreResult
    from longmem_etl.retention import ForgetResult
    from longmem_etl.snapshots.convert import ConvertResult
    from longmem_etl.snapshots.diff import SnapshotDiff
    from longmem_etl.transforms.run import CleanResult


def convert(
    dump: str | os.PathLike,
    root: str | os.PathLike,
    *,
    tenant: str | None = None,
    strict: bool = False,
    stream: bool | None = None,
    progress: bool = False,
) -> ConvertResult:
    """Dump file -> new snapshot under ``root``; bad rows go to its ``rejected.parquet``.

    ``strict`` makes any rejected row a ``BadInput``; ``stream`` forces (True) or forbids (False)
    the bounded-memory ijson path for ``.json`` (None: chosen by size)."""
    from longmem_etl.snapshots.convert import convert_dump
    from longmem_etl.storage.staging import remote_paths, staged

    with staged(root, write=True, tenant=tenant) as (local, _):
        result = convert_dump(
            dump, local, tenant=tenant, strict=strict, stream=stream, progress=progress
        )
    return remote_paths(result)


def backup(
    source: str,
    root: str | os.PathLike,
    *,
    tenant: str | None = None,
    paged: bool = False,
    keep: int | None = None,
    key_env: str = DEFAULT_KEY_ENV,
    page_size: int = 100,
    progress: bool = False,
    retention: Any = None,
    recipients: list[str] | None = None,
    incremental: Any = True,
) -> BackupResult:
    """Export the account behind an endpoint URI into a verified snapshot; then ``keep`` (the newest
    N) or ``retention`` (a ``retention.Policy``, restic's rules) forgets older ones.

    ``recipients``: ``age1...`` public keys to encrypt the snapshot to (none given:
    ``$LONGMEM_ETL_RECIPIENTS``, as the CLI's ``--encrypt-to``). ``incremental``: True (the default,
    as the CLI) stores only the changes against the tenant's newest verified snapshot, False a full
    snapshot; a ``snapshots.incremental.Incremental`` sets ``full_every`` too."""
    from longmem_etl.backup import backup as _backup
    from longmem_etl.snapshots.crypto import parse_recipients
    from longmem_etl.snapshots.incremental import Incremental
    from longmem_etl.storage.staging import remote_paths, staged

    if incremental is True:
        plan: Incremental | None = Incremental()
    elif incremental is False or incremental is None:
        plan = None
    else:
        plan = incremental
    with staged(root, write=True, tenant=tenant) as (local, _):
        result = _backup(
            source,
            local,
            tenant=tenant,
            paged=paged,
            keep=keep,
            key_env=key_env,
            page_size=page_size,
            progress=progress,
            retention=retention,
            recipients=parse_recipients(recipients),
            incremental=plan,
        )
    return remote_paths(result)


def clean(
    snapshot: str | os.PathLike,
    spec: str | os.PathLike,
    root: str | os.PathLike,
    *,
    dry_run: bool = False,
    tenant: str | None = None,
) -> CleanResult:
    """Apply a TOML transform spec to a snapshot -> new snapshot whose ``rejected`` holds every removed
    row with its step and reason. The spec is validated before any data is read."""
    from longmem_etl.storage.staging import remote_paths, staged
    from longmem_etl.transforms.run import clean_snapshot

    with staged(root, [snapshot], write=not dry_run) as (local, (snap,)):
        result = clean_snapshot(snap, spec, local, dry_run=dry_run, tenant=tenant)
    return remote_paths(result)


def migrate(
    source: str,
    target: str,
    *,
    stop: threading.Event | None = None,
    show_progress: bool = False,
    **options: Any,
) -> MigrationResult:
    """Resumable exactly-once upload of ``source`` (URI, dump or snapshot) to the ``target`` URI.

    ``options`` are the fields of ``MigrationOptions`` (``mode``, ``spec``, ``concurrency``,
    ``chunk_size``, ``journal``, ``restart``, ``dry_run``, ...). Setting ``stop`` ends the run at
    the next safe point (``result.interrupted``); re-running the same call resumes it."""
    from longmem_etl.migrate.engine import MigrationOptions, run_migration
    from longmem_etl.storage.staging import staged

    with staged(None, [source]) as (_, (local,)):
        opts = MigrationOptions(
            source=str(local), target=target, show_progress=show_progress, **options
        )
        return run_migration(opts, stop=stop)


# ``import longmem_etl.migrate.engine as e`` reads ``engine`` off ``longmem_etl.migrate``, which is
# this function (the package attribute always is), and on failing falls back to the module
# ``f"{migrate.__name__}.engine"`` in ``sys.modules``: named after the subpackage, that finds it.
migrate.__name__ = "longmem_etl.migrate"


def verify(
    source: str,
    target: str,
    *,
    spec: str | None = None,
    migration_id: str | None = None,
    source_key_env: str = DEFAULT_KEY_ENV,
    target_key_env: str = DEFAULT_KEY_ENV,
) -> VerificationReport:
    """Compare a source with a target exactly (per collection and container tag)."""
    from longmem_etl.migrate.verifying import verify_source_target

    return verify_source_target(
        source,
        target,
        spec=spec,
        migration_id=migration_id,
        source_key_env=source_key_env,
        target_key_env=target_key_env,
    )


def diff(
    snapshot_a: str | os.PathLike, snapshot_b: str | os.PathLike, *, limit: int | None = 50
) -> SnapshotDiff:
    """Added / removed / changed memories between two snapshots (``limit`` difference rows; None: all)."""
    from longmem_etl.snapshots.diff import diff_snapshots
    from longmem_etl.storage.staging import remote_paths, staged

    with staged(None, [snapshot_a, snapshot_b]) as (_, (a, b)):
        return remote_paths(diff_snapshots(a, b, limit=limit))


def connect(
    root: str | os.PathLike,
    database: str | os.PathLike | None = None,
    *,
    read_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the warehouse views (``memories``, ``latest_memories``,
    ``collections``, ``rejected``, ``snapshots``) over every snapshot under ``root``."""
    from longmem_etl.storage import is_remote
    from longmem_etl.warehouse import connect as _connect

    if is_remote(root):  # read through a private copy kept until the process exits
        from longmem_etl.storage.staging import lasting_mirror

        root = lasting_mirror(str(root))
    return _connect(root, database, read_only=read_only)


def restore(target: str, *, stop: threading.Event | None = None, **options: Any) -> RestoreResult:
    """Put a backed-up snapshot's memories (all, or a selection) back into the ``target`` account.

    ``options`` are the fields of ``RestoreOptions`` (``snapshot`` or ``root`` + ``tenant`` +
    ``as_of``; ``collections``, ``tags``, ``ids_file``, ``where``; ``mirror``, ``dry_run``,
    ``mode``, ``concurrency``, ``work_dir``, ``key_env``). Re-running the same call continues it."""
    from longmem_etl.restore import RestoreOptions
    from longmem_etl.restore import restore as _restore
    from longmem_etl.storage.staging import remote_paths, staged

    root, snapshot = options.get("root"), options.get("snapshot")
    with staged(root, [snapshot], tenant=options.get("tenant")) as (local, (snap,)):
        if root is not None:
            options["root"] = local
        if snapshot is not None:
            options["snapshot"] = snap
        return remote_paths(_restore(RestoreOptions(target=target, **options), stop=stop))


def forget(
    root: str | os.PathLike,
    *,
    keep_last: int = 0,
    keep_hourly: int = 0,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
    keep_yearly: int = 0,
    keep_within: str | None = None,
    tenant: str | None = None,
    dry_run: bool = False,
) -> ForgetResult:
    """Remove old snapshots by restic's ``--keep-*`` rules (0 = rule off, -1 = unlimited;
    ``keep_within`` like ``"30d"``); the newest verified snapshot of a tenant is always kept."""
    from longmem_etl.retention import Policy, parse_within
    from longmem_etl.retention import forget as _forget

    policy = Policy(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
        within=parse_within(keep_within) if keep_within else None,
    )
    from longmem_etl.storage.staging import remote_paths, staged

    with staged(root, write=not dry_run, tenant=tenant) as (local, _):
        return remote_paths(_forget(Path(local), policy, tenant=tenant, dry_run=dry_run))


def publish(
    root: str | os.PathLike,
    catalog: str,
    warehouse: str,
    *,
    namespace: str = "longmem",
    tenant: str | None = None,
) -> PublishResult:
    """Append every snapshot under ``root`` that the Iceberg tables ``NS.memories``,
    ``NS.collections`` and ``NS.rejected`` do not hold yet, one append per snapshot and table
    (``docs/lakehouse.md``); re-runs and resumed runs append nothing twice."""
    from longmem_etl.lakehouse.publish import publish as _publish

    return _publish(root, catalog, warehouse, namespace=namespace, tenant=tenant)

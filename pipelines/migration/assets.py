"""``tenant_migration``: upload the tenant's latest backup to a target, resumably, exactly once.

Thin over ``longmem_etl.migrate.run_migration``. The engine names a migration by the source's stable
key (the tenant), the target identity and the mode — not the snapshot, not the spec — and keeps its
journal under ``$LONGMEM_ETL_HOME/migrations/<migration_id>/`` (the same place the CLI uses):
re-materializing after a failure (or re-executing the failed run) finds that journal and
*resumes*; a newer backup or an edited spec plans again, and the target's markers say what already
landed, so nothing is sent twice. ``restart: true`` discards the journal (same guarantee).

Concurrency: the asset is in the ``longmem_migration`` pool (cap concurrent migration steps in the
instance's ``concurrency.pools``), the sensor tags each run ``longmem-etl/migration=<tenant>`` for
per-tenant ``tag_concurrency_limits``, and the engine's per-migration OS lock is the backstop: a
second run of the same tenant waits for the first (``wait``) and then finds nothing left to send.
The target's key is read by the library from the env var the ``target`` resource names; metadata
only ever holds a key-free form of the URI.
"""

from pathlib import Path

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from pipelines.backup.assets import memories_snapshot
from pipelines.partitions import tenant_of, tenants_partitions
from pipelines.resources import LongmemEndpoint, render, safe_uri
from pipelines.utils import latest_path, md_table


class MigrationConfig(Config):
    """One migration's options (all optional: the defaults migrate to the ``target`` resource)."""

    target_uri: str = ""
    """Target URI template ({home}, {tenant}); empty uses the ``target`` resource."""
    mode: str = "add"
    """``add`` (add_many) or ``import`` (import_memories)."""
    spec: str = ""
    """Transform spec applied on the way (TOML path); empty migrates the backup as it is."""
    concurrency: int = 4
    chunk_size: int = 100
    restart: bool = False
    """Discard the journal and start over (default: resume)."""
    source_snapshot: str = ""
    """Migrate this snapshot directory instead of the tenant's latest backup."""
    update_changed: bool = False
    """Items already in the target whose payload now differs: update them in place."""
    wait: bool = True
    """Another run of this tenant's migration holds the lock: wait for it (false: fail at once)."""


def migrations_root() -> Path:
    """Where journals live: the library's state home (shared with the CLI)."""
    from longmem_etl.migrate.state import migrations_dir

    return migrations_dir()


@asset(
    partitions_def=tenants_partitions,
    group_name="migration",
    deps=[memories_snapshot],
    kinds={"longmem"},
    pool="longmem_migration",
    description="The tenant's latest backup migrated to the target (resumable, exactly once).",
)
def tenant_migration(
    context: AssetExecutionContext, config: MigrationConfig, target: LongmemEndpoint
) -> MaterializeResult:
    from longmem_etl.migrate import MigrationOptions, run_migration

    tenant = tenant_of(context.partition_key)
    source = (
        Path(config.source_snapshot)
        if config.source_snapshot
        else latest_path(
            context.instance, "memories_snapshot", context.partition_key, "snapshot_path"
        )
    )
    if source is None:
        raise Failure(f"memories_snapshot has no materialization for tenant {tenant}")
    target_uri = render(config.target_uri, tenant) if config.target_uri else target.prepare(tenant)
    key_env = target.key_env(tenant)
    context.log.info(f"migrating {source} -> {safe_uri(target_uri)} ({config.mode})")
    result = run_migration(
        MigrationOptions(
            source=str(source),
            target=target_uri,
            mode=config.mode,
            spec=config.spec or None,
            concurrency=config.concurrency,
            chunk_size=config.chunk_size,
            restart=config.restart,
            target_key_env=key_env,
            update_changed=config.update_changed,
            wait=config.wait,
            show_progress=False,
        )
    )
    if result.interrupted:
        raise Failure(f"migration {result.migration_id} interrupted; materialize again to resume")
    counts = result.counts
    verification = result.verification or {}
    totals = verification.get("totals", {})
    return MaterializeResult(
        metadata={
            "source_snapshot": MetadataValue.path(str(source)),
            "target": safe_uri(target_uri),
            "target_key_env": key_env,
            "mode": config.mode,
            "spec": config.spec,
            "migration_id": result.migration_id,
            "source_key": str(result.source_key),
            "already_in_target": int((result.holdings or {}).get("already_in_target", 0)),
            "changed_in_target": int((result.holdings or {}).get("changed", 0)),
            "journal": MetadataValue.path(str(result.journal)),
            "resumed": result.resumed,
            "chunks": md_table(["state", "chunks"], list((counts.get("chunks") or {}).items())),
            "chunks_total": int(counts.get("chunks_total", 0)),
            "chunks_done": int((counts.get("chunks") or {}).get("done", 0)),
            "items_total": int(counts.get("items_total", 0)),
            "items_done": int(counts.get("items_done", 0)),
            "dead_letters": result.dead_letters,
            "verified_exact": bool(verification.get("exact")),
            "verification": md_table(["total", "count"], sorted(totals.items())),
            "seconds": round(result.seconds, 3),
        }
    )

"""``tenant_migration``: upload the tenant's latest backup to a target, resumably, exactly once.

Thin over ``longmem_etl.migrate.run_migration``. The engine names a migration by its source
identity (snapshot path + manifest sha256), spec, target identity and mode, and keeps its journal
under ``{home}/migrations/<migration_id>/``: re-materializing after a failure (or re-executing the
failed run) with the same config finds that journal and *resumes*; ``restart: true`` discards it.
Pin ``source_snapshot`` to resume a migration after a newer backup has landed. The target's key is
read by the library from the env var the ``target`` resource names; metadata only ever holds a
key-free form of the URI.
"""

from pathlib import Path

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset

from pipelines.backup.assets import memories_snapshot
from pipelines.partitions import tenant_of, tenants_partitions
from pipelines.resources import LongmemEndpoint, render, safe_uri, state_home
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


def migrations_root() -> Path:
    return state_home() / "migrations"


@asset(
    partitions_def=tenants_partitions,
    group_name="migration",
    deps=[memories_snapshot],
    kinds={"longmem"},
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
            work_root=str(migrations_root()),
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

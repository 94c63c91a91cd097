"""``tenant_migration``: upload the tenant's latest backup to a target, resumably, exactly once.

Thin over ``longmem_etl.migrate.run_migration``. The journal lives at a deterministic path per tenant
and target (``{home}/journals/<tenant>/<target fingerprint>``), so re-materializing after a failure
(or re-executing the failed run) resumes the same journal instead of starting over; the engine
refuses a journal bound to another target. Run config: target URI, mode, spec, concurrency, chunk
size, restart. The target's key is read by the library from the env var the ``target`` resource
names; only a key-free form of the URI ever reaches metadata.
"""

import hashlib
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset

from pipelines.backup.assets import memories_snapshot
from pipelines.partitions import tenants_partitions
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


def journal_path(tenant: str, target_uri: str, mode: str) -> Path:
    """Deterministic per tenant, target and mode: the same run config finds the same journal."""
    digest = hashlib.sha256(f"{safe_uri(target_uri)}\n{mode}".encode()).hexdigest()[:16]
    return state_home() / "journals" / tenant / f"{digest}.journal"


@asset(
    partitions_def=tenants_partitions,
    group_name="migration",
    deps=[memories_snapshot],
    kinds={"longmem"},
    description="The tenant migrated to the target endpoint (resumable, exactly once, verified).",
)
def tenant_migration(
    context: AssetExecutionContext, config: MigrationConfig, target: LongmemEndpoint
) -> MaterializeResult:
    from longmem_etl.migrate import MigrationOptions, run_migration

    tenant = context.partition_key
    source = (
        Path(config.source_snapshot)
        if config.source_snapshot
        else latest_path(context.instance, "memories_snapshot", tenant, "snapshot_path")
    )
    if source is None:
        raise RuntimeError(f"memories_snapshot has no materialization for tenant {tenant}")
    target_uri = render(config.target_uri, tenant) if config.target_uri else target.prepare(tenant)
    journal = journal_path(tenant, target_uri, config.mode)
    journal.parent.mkdir(parents=True, exist_ok=True)
    context.log.info(f"migrating {source} -> {safe_uri(target_uri)} (journal {journal})")
    result = run_migration(
        MigrationOptions(
            source=str(source),
            target=target_uri,
            mode=config.mode,
            spec=config.spec or None,
            concurrency=config.concurrency,
            chunk_size=config.chunk_size,
            journal=str(journal),
            restart=config.restart,
            target_key_env=target.key_env(tenant),
        )
    )
    chunks = result["chunks"]
    return MaterializeResult(
        metadata={
            "source_snapshot": MetadataValue.path(str(source)),
            "target": safe_uri(target_uri),
            "mode": config.mode,
            "journal": MetadataValue.path(str(journal)),
            "chunks": md_table(["state", "chunks"], sorted(chunks.items())),
            "chunks_done": int(chunks.get("done", 0)),
            "items_done": int(result.get("items_done", 0)),
            "dead_letters": int(result.get("dead", 0)),
            "resumed": bool(result.get("resumed", False)),
        }
    )

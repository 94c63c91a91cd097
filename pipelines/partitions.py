"""Per-tenant partitions, shared by every domain.

Tenants are a *dynamic* partition set named ``tenants``: adding one is a data change, not a code
change. Ways to add one (see docs/dagster.md): the UI's "Add partition" on any tenant asset, the
``tenant_registry`` sensor (reads ``$LONGMEM_ETL_TENANTS``, default: the sample tenants), or
``python -m pipelines.tenants add NAME`` against the instance in ``$DAGSTER_HOME``.

A partition key is the tenant's exact name whenever Dagster accepts it. Dagster refuses keys
containing ``...`` or the control characters ``\\a \\b \\f \\n \\r \\t \\v \\0``; such a name (and any
name containing ``%``) is percent-encoded instead (``%``, ``.`` and control characters become
``%XX``). A key with ``%`` in it is always an encoded one, so :func:`tenant_of` reverses the mapping
exactly; assets call it rather than using ``context.partition_key`` as a name.
"""

from __future__ import annotations

import os
import re

from dagster import DagsterInstance, DynamicPartitionsDefinition

from longmem_etl.samples import SAMPLE_TENANTS

tenants_partitions = DynamicPartitionsDefinition(name="tenants")

# what Dagster refuses in a partition key (dagster._core.definitions.partitions.utils.base)
_REFUSED = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
_ESCAPE = re.compile(r"[%.\x00-\x1f\x7f]")


def partition_key(tenant: str) -> str:
    """The ``tenants`` partition key of a tenant: its exact name unless Dagster would refuse it."""
    from longmem_etl.snapshots.layout import check_tenant

    check_tenant(tenant)
    if "%" not in tenant and not any(bad in tenant for bad in _REFUSED):
        return tenant
    return _ESCAPE.sub(lambda m: f"%{ord(m.group()):02X}", tenant)


def tenant_of(key: str) -> str:
    """The exact tenant name a partition key stands for (inverse of :func:`partition_key`)."""
    if "%" not in key:
        return key
    from urllib.parse import unquote

    return unquote(key)


def default_tenants() -> list[str]:
    """``$LONGMEM_ETL_TENANTS`` (comma-separated), else the sample tenants (acme, globex)."""
    configured = os.environ.get("LONGMEM_ETL_TENANTS")
    if configured is not None:
        return sorted({t.strip() for t in configured.split(",") if t.strip()})
    return sorted(SAMPLE_TENANTS)


def missing_tenants(instance: DagsterInstance, wanted: list[str]) -> list[str]:
    """The tenants in ``wanted`` (exact names) the instance does not know yet."""
    known = set(instance.get_dynamic_partitions(tenants_partitions.name))
    return [t for t in wanted if partition_key(t) not in known]


def register_tenants(instance: DagsterInstance, tenants: list[str] | None = None) -> list[str]:
    """Add tenants (default: :func:`default_tenants`) to the instance; returns the names added."""
    added = missing_tenants(instance, default_tenants() if tenants is None else tenants)
    if added:
        instance.add_dynamic_partitions(tenants_partitions.name, [partition_key(t) for t in added])
    return added

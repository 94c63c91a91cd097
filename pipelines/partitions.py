"""Per-tenant partitions, shared by every domain.

Tenants are a *dynamic* partition set named ``tenants``: adding one is a data change, not a code
change. Ways to add one (see docs/dagster.md): the UI's "Add partition" on any tenant asset, the
``tenant_registry`` sensor (reads ``$LONGMEM_ETL_TENANTS``, default: the sample tenants), or
``python -m pipelines.tenants add NAME`` against the instance in ``$DAGSTER_HOME``.
"""

from __future__ import annotations

import os

from dagster import DagsterInstance, DynamicPartitionsDefinition

from longmem_etl.samples import SAMPLE_TENANTS

tenants_partitions = DynamicPartitionsDefinition(name="tenants")


def default_tenants() -> list[str]:
    """``$LONGMEM_ETL_TENANTS`` (comma-separated), else the sample tenants (acme, globex)."""
    configured = os.environ.get("LONGMEM_ETL_TENANTS")
    if configured is not None:
        return sorted({t.strip() for t in configured.split(",") if t.strip()})
    return sorted(SAMPLE_TENANTS)


def missing_tenants(instance: DagsterInstance, wanted: list[str]) -> list[str]:
    """The tenants in ``wanted`` the instance does not know yet."""
    known = set(instance.get_dynamic_partitions(tenants_partitions.name))
    return [t for t in wanted if t not in known]


def register_tenants(instance: DagsterInstance, tenants: list[str] | None = None) -> list[str]:
    """Add tenants (default: :func:`default_tenants`) to the instance; returns the ones added."""
    added = missing_tenants(instance, default_tenants() if tenants is None else tenants)
    if added:
        instance.add_dynamic_partitions(tenants_partitions.name, added)
    return added

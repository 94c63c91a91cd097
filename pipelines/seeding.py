"""Seed embedded ``local:`` tenants from ``sample_data`` on first use, so the defaults run offline.

Idempotent and atomic: a tenant file that exists is never touched; a missing one is seeded into a
temporary file beside it (``LocalStore.seed_dump``, the same call as ``longmem-etl local seed``) and
renamed into place, so two processes racing see either nothing or a whole tenant.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.resources import sample_dump


def local_path(uri: str) -> Path | None:
    """The SQLite path of a ``local:`` URI (without its fault-injection query), else None."""
    if not uri.startswith("local:"):
        return None
    return Path(uri[len("local:") :].partition("?")[0]).expanduser().resolve()


def seed_local_tenant(uri: str, tenant: str) -> bool:
    """Seed ``uri``'s embedded store from the tenant's sample dump if missing; True if seeded."""
    path = local_path(uri)
    sample = sample_dump(tenant)
    if path is None or path.exists() or sample is None:
        return False
    from longmem_etl import jsonio
    from longmem_etl.api.endpoints import open_endpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.seed-{os.getpid()}")
    try:
        store = open_endpoint(f"local:{tmp}")
        try:
            store.seed_dump(jsonio.loads(sample.read_bytes()))
        finally:
            store.close()
        if path.exists():  # another process won the race: keep theirs
            return False
        os.replace(tmp, path)
        return True
    finally:
        for leftover in tmp.parent.glob(tmp.name + "*"):
            leftover.unlink(missing_ok=True)

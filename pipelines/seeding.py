"""Seed embedded ``local:`` tenants from ``sample_data`` on first use, so the defaults run offline.

Idempotent and atomic: a tenant file that exists is never touched; a missing one is seeded into a
temporary file beside it (``seed_from_file``, the same call as ``longmem-etl local seed``) and
hard-linked into place (``os.link`` fails when the name exists, so a store that appeared meanwhile,
another process's or a user's, is never replaced), so two processes racing see either nothing or a
whole tenant. Only the temporary file (named with our pid) and its SQLite side files are removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from longmem_etl.api.endpoints import parse_local
from longmem_etl.api.local_seed import seed_from_file
from longmem_etl.samples import SAMPLE_TENANTS, sample_data_dir

# Imports only the library: resources.py calls into this module, never the other way round.


def sample_dump(tenant: str) -> Path | None:
    """The dump a tenant is seeded from: ``SAMPLE_TENANTS``, else ``<sample data>/<tenant>.json``."""
    path = sample_data_dir() / SAMPLE_TENANTS.get(tenant, f"{tenant}.json")
    return path if path.is_file() else None


def seed_local_tenant(uri: str, tenant: str) -> bool:
    """Seed ``uri``'s embedded store from the tenant's sample dump if missing; True if seeded."""
    if not uri.startswith("local:"):
        return False
    path = parse_local(uri).path
    sample = sample_dump(tenant)
    if path.exists() or sample is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.seed-{os.getpid()}")
    try:
        seed_from_file(f"local:{tmp}", str(sample))
        try:
            os.link(
                tmp, path
            )  # atomic and never replaces: another process won the race? keep theirs
        except FileExistsError:
            return False
        return True
    finally:
        for leftover in tmp.parent.glob(tmp.name + "*"):
            leftover.unlink(missing_ok=True)

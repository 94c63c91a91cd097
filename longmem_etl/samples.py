"""Where the bundled sample tenants live, for `quickstart` and the Dagster defaults."""

from __future__ import annotations

import os
from pathlib import Path

from longmem_etl.errors import BadInput

SAMPLE_TENANTS = {"acme": "acme.json", "globex": "globex-dirty.json"}
"""The offline demo tenants: a healthy one and a dirty one, by their sample dump."""


def sample_data_dir() -> Path:
    """``$LONGMEM_ETL_SAMPLE_DATA``, else the ``sample_data/`` shipped inside this package.

    The files live in the package (package data), not beside it, so an installed wheel runs
    ``quickstart`` and the Dagster offline defaults from any directory."""
    configured = os.environ.get("LONGMEM_ETL_SAMPLE_DATA")
    return Path(configured) if configured else Path(__file__).resolve().parent / "sample_data"


def sample_file(name: str) -> Path:
    """A file under sample_data, or a clear error naming where it was looked for."""
    path = sample_data_dir() / name
    if not path.is_file():
        raise BadInput(
            f"{path}: sample data not found; unset LONGMEM_ETL_SAMPLE_DATA to use the copy "
            "shipped with longmem-etl, or point it at a directory holding this file"
        )
    return path

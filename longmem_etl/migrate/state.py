"""Where migration state lives: one home per user, keyed by what a migration *is*, not by the cwd.

``$LONGMEM_ETL_HOME`` if set, else the platform's user state directory (``~/.local/state/longmem-etl``
on Linux, via platformdirs). Under it:

    migrations/<migration id>/   journal.sqlite, frozen/, id_map.parquet, ... (see `engine`)
    locks/<migration id>.lock    held by the run working on that identity, whatever its --journal
    repairs/<repair id>/         `verify --repair`'s journal

The migration id hashes the source key, the target identity and the mode (see
`engine.migration_id_of`), so the same migration finds the same journal from any directory, with
an edited spec, or after the dump file grew; the CLI and the Dagster asset share this layout.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LONGMEM_ETL_HOME"


def state_home() -> Path:
    """The absolute state directory (not created here)."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_state_dir("longmem-etl", appauthor=False)).absolute()


def migrations_dir() -> Path:
    return state_home() / "migrations"


def locks_dir() -> Path:
    return state_home() / "locks"


def repairs_dir() -> Path:
    return state_home() / "repairs"

"""Where migration state lives: one home per user, keyed by what a migration *is*, not by the cwd.

The state home is ``longmem_etl.home.state_home()`` (``$LONGMEM_ETL_HOME``, else the platform's user
state directory). Under it:

    migrations/<migration id>/   journal.sqlite, frozen/, id_map.parquet, ... (see `engine`)
    locks/<migration id>.lock    held by the run working on that identity, whatever its --journal
    repairs/<repair id>/         `verify --repair`'s journal

The migration id hashes the source key, the target identity and the mode (see
`engine.migration_id_of`), so the same migration finds the same journal from any directory, with
an edited spec, or after the dump file grew; the CLI and the Dagster asset share this layout.
"""

from __future__ import annotations

from pathlib import Path

from longmem_etl.home import HOME_ENV, state_home

__all__ = ["HOME_ENV", "JOURNAL_NAME", "locks_dir", "migrations_dir", "repairs_dir", "state_home"]

# a migration's journal file, in its work dir (``migrations/<id>/`` or a ``--journal`` elsewhere)
JOURNAL_NAME = "journal.sqlite"


def migrations_dir() -> Path:
    return state_home() / "migrations"


def locks_dir() -> Path:
    return state_home() / "locks"


def repairs_dir() -> Path:
    return state_home() / "repairs"

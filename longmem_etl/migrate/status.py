"""What `status` shows: a migration's journal read back, and every journal under the state home.

Kept apart from `engine` so that `longmem-etl status` opens SQLite journals without importing the
engine's pyarrow, DuckDB and endpoint code (it is the verb people run while a migration is going).
"""

from __future__ import annotations

import json
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from longmem_etl.errors import BadInput
from longmem_etl.migrate.journal import Journal, is_journal
from longmem_etl.migrate.state import JOURNAL_NAME, migrations_dir
from longmem_etl.secrets import mask_obj


def list_migrations(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every migration journal under the state home (``root``: another ``migrations`` dir), newest
    first: what `status` shows without an argument."""
    base = Path(root) if root else migrations_dir()
    out = []
    for path in sorted(base.glob(f"*/{JOURNAL_NAME}"), key=lambda p: -p.stat().st_mtime):
        with suppress(BadInput, OSError, ValueError):
            out.append(migration_status(path))
    return out


def migration_status(journal_path: str | os.PathLike) -> dict[str, Any]:
    """What `status JOURNAL` shows: chunk states, items done/total, dead letters, last errors."""
    path = Path(journal_path)
    if path.is_dir():
        path = path / JOURNAL_NAME
    if not path.is_file():
        raise BadInput(f"{journal_path}: no journal there")
    if not is_journal(path):
        raise BadInput(f"{journal_path}: not a longmem-etl migration journal")
    with Journal(path) as journal:
        binding = journal.get("binding")
        if binding is None:
            raise BadInput(f"{journal_path}: not a longmem-etl migration journal")
        counts = journal.counts()
        status = {
            "journal": str(path.absolute()),
            "migration_id": journal.get("migration_id"),
            "source_key": journal.get("source_key"),
            "holdings": journal.get("holdings"),
            "changed": len(journal.changed_items()),
            "planned": journal.planned,
            "binding": binding,
            "options": journal.get("options"),
            "resume_command": journal.get("resume_command"),
            **counts,
            "dead_letters": counts["items_dead"],
            "last_errors": journal.last_errors(),
        }
    ver = path.parent / "verification.json"
    if ver.is_file():
        status["verification"] = json.loads(ver.read_text())
    return mask_obj(status)

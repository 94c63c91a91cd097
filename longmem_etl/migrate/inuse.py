"""Which snapshots unfinished migrations still read: what ``forget`` must keep.

A migration whose ``--source`` is a snapshot directory does not copy it: the journal's
``frozen_snapshot`` names the directory (pinned by its manifest's sha256 in the plan binding), and a
resumed run, its verification and ``verify`` read it again. Removing it (or, for an increment, a link
of its chain, which ``forget`` would answer by rewriting it as a full snapshot: a new manifest, so a
replan) would leave that migration unable to finish as planned. So ``forget`` keeps such snapshots,
with the migration named as the reason, until the migration has finished.

Journals are read with read-only SQLite connections (a running migration is never blocked or
changed), from the state home's ``migrations/`` only: a migration run with ``--journal`` elsewhere
is not seen (documented in ``docs/guarantees.md``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from longmem_etl.migrate.state import JOURNAL_NAME, migrations_dir


def _meta(con: sqlite3.Connection, key: str) -> object:
    row = con.execute("SELECT v FROM migration WHERE k = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def _unfinished_source(journal: Path) -> Path | None:
    """The snapshot directory an unfinished migration reads, or None (finished, or not ours)."""
    con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        frozen = _meta(con, "frozen_snapshot")
        if not isinstance(frozen, str) or journal.parent in Path(frozen).parents:
            return None  # nothing frozen yet, or a copy inside its own work dir
        pending = con.execute("SELECT 1 FROM items WHERE state = 'planned' LIMIT 1").fetchone()
        finished = (
            _meta(con, "planned")
            and pending is None
            and (journal.parent / "verification.json").is_file()
        )
        return None if finished else Path(frozen)
    finally:
        con.close()


def snapshots_in_use(base: Path | None = None) -> dict[Path, str]:
    """``{resolved snapshot dir: migration id}`` for every unfinished migration under the state home
    (``base``: another ``migrations`` dir) whose source is a snapshot directory."""
    out: dict[Path, str] = {}
    for journal in sorted((base or migrations_dir()).glob(f"*/{JOURNAL_NAME}")):
        with contextlib.suppress(sqlite3.Error, OSError, ValueError):
            src = _unfinished_source(journal)
            if src is not None:
                out[src.resolve()] = journal.parent.name
    return out

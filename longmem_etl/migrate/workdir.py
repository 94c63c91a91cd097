"""Never delete or overwrite what the tool did not make.

A migration's working directory (the journal's directory) gets a marker file, ``.longmem-etl-work``,
when the tool first uses it. From then on the tool may replace its own names there (``frozen/``,
``id_map.parquet``, ``dead_letter.jsonl``, ``verification.json``). A directory without the marker
in which one of those names already exists is someone else's: the run stops with exit 2 naming the
path, and nothing is removed. (A journal written by an older version counts as the tool's own.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from longmem_etl.errors import BadInput

MARKER = ".longmem-etl-work"
OWNED_NAMES = ("frozen", "id_map.parquet", "dead_letter.jsonl", "verification.json")


def is_owned(work_dir: Path) -> bool:
    return (work_dir / MARKER).is_file()


def claim(work_dir: Path, journal_path: Path) -> None:
    """Make ``work_dir`` the tool's, or refuse (BadInput) if something not ours is in the way."""
    from longmem_etl.migrate.journal import is_journal

    if is_owned(work_dir):
        return
    if journal_path.exists() and not is_journal(journal_path):
        raise BadInput(
            f"--journal {journal_path}: exists and is not a migration journal; not touching it"
        )
    legacy = journal_path.exists()  # an older version's journal: its work dir is the tool's
    if not legacy:
        for name in OWNED_NAMES:
            path = work_dir / name
            if path.exists() or path.is_symlink():
                raise BadInput(
                    f"{path}: exists and was not made by longmem-etl; not deleting or overwriting "
                    "it — move it away or choose another --journal directory"
                )
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / MARKER).write_text(
        json.dumps({"tool": "longmem-etl", "what": "migration work dir", "created": time.time()})
        + "\n"
    )

"""Migrations that ran from a snapshot root, and their verification summaries.

A migration's work dir (``migrate``: ``<state home>/migrations/<id>/``, or the ``--journal``
file's directory) holds ``journal.sqlite`` (its ``plan_binding`` names the source it planned from)
and, once verified, ``verification.json``. A migration "ran from this root" when its source is a
snapshot directory under the root; it belongs to the tenant of that snapshot. Journals are opened
read-only (never locked or changed: a migration may be running).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from longmem_etl.snapshots.layout import TENANT_PREFIX

JOURNAL = "journal.sqlite"
VERIFICATION = "verification.json"


def default_dirs(root: Path) -> list[Path]:
    """Where migrations of this root's snapshots usually live: the state home's ``migrations/``
    (``$LONGMEM_ETL_HOME``, where ``migrate`` puts them), ``.longmem-etl/migrations`` in the root,
    beside it, or in the current directory, and ``migrations/`` beside the root (the quickstart's
    layout)."""
    from longmem_etl.migrate.state import migrations_dir

    root = root.resolve()
    return [
        migrations_dir(),
        root / ".longmem-etl" / "migrations",
        root.parent / ".longmem-etl" / "migrations",
        root.parent / "migrations",
        Path.cwd() / ".longmem-etl" / "migrations",
    ]


def _binding(journal: Path) -> dict[str, Any] | None:
    try:
        con = sqlite3.connect(f"file:{journal.absolute()}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT k, v FROM migration WHERE k IN ('binding', 'plan_binding', 'migration_id')"
            ).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    values = {k: json.loads(v) for k, v in rows}
    plan = values.get("plan_binding")
    binding = values.get("binding")
    # the content the plan was made from (path of a snapshot source); older journals had it
    # as the binding's source
    if isinstance(plan, dict) and isinstance(plan.get("content"), dict):
        source = plan["content"]
    elif isinstance(binding, dict) and isinstance(binding.get("source"), dict):
        source = binding["source"]
    else:
        return None
    return {"source": source, "migration_id": values.get("migration_id")}


def find_migrations(
    root: Path, dirs: Iterable[Path] | None = None, also: Iterable[Path] = ()
) -> dict[str, list[dict]]:
    """``{tenant: [{migration_id, source_snapshot, verification, work_dir}]}`` for every migration
    with a ``verification.json`` whose source is a snapshot under ``root`` (or a root in ``also``:
    the Dagster asset reports the clean root, while its migrations start from the backup root)."""
    root = root.resolve()
    roots = [root, *(Path(r).resolve() for r in also)]
    out: dict[str, list[dict]] = {}
    seen: set[Path] = set()
    for base in dirs if dirs is not None else default_dirs(root):
        base = Path(base)
        journals = (
            [base / JOURNAL] if (base / JOURNAL).is_file() else sorted(base.glob(f"*/{JOURNAL}"))
        )
        for journal in journals:
            work = journal.parent.resolve()
            ver = work / VERIFICATION
            if work in seen or not ver.is_file():
                continue
            seen.add(work)
            info = _binding(journal)
            if info is None:
                continue
            source = info["source"]
            if source.get("kind") != "snapshot" or not isinstance(source.get("path"), str):
                continue
            snap = Path(source["path"]).resolve()
            if not any(snap.is_relative_to(r) for r in roots) or not snap.parent.name.startswith(
                TENANT_PREFIX
            ):
                continue
            try:
                verification = json.loads(ver.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                verification = {"error": f"{ver}: unreadable"}
            tenant = snap.parent.name.removeprefix(TENANT_PREFIX)
            out.setdefault(tenant, []).append(
                {
                    "migration_id": info["migration_id"],
                    "source_snapshot": snap.name.split("=", 1)[-1],
                    "verification": verification,
                    "work_dir": os.fspath(work),
                }
            )
    return out

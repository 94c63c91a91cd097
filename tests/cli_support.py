"""Running the real CLI in a child process, as a user would (the one runner every process test uses).

The child gets this process's environment with two changes: the checkout is importable from any
cwd, and of the developer's own ``LONGMEM_ETL_*`` settings only the test's state home
(``LONGMEM_ETL_HOME``, set per test by ``conftest.py``) is kept, so a ``LONGMEM_ETL_DEBUG`` or
``LONGMEM_ETL_RECIPIENTS`` in someone's shell cannot change what a test sees. ``env`` adds or
(with ``None``) removes variables on top of that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "longmem_etl" / "sample_data"  # the sample dumps ship inside the package
CLI = [sys.executable, "-m", "longmem_etl.cli.main"]
KEPT = {"LONGMEM_ETL_HOME"}


def cli_env(
    env: Mapping[str, str | None] | None = None, *, pythonpath: Sequence[str | Path] = ()
) -> dict[str, str]:
    """The environment of a CLI child: see the module docstring; ``pythonpath`` goes first on the
    import path (e.g. a fake SDK package), then the checkout."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("LONGMEM_ETL_") or k in KEPT}
    for name, value in (env or {}).items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    out["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), str(ROOT)])
    return out


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    pythonpath: Sequence[str | Path] = (),
    timeout: float = 300,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``longmem-etl ARGS`` from ``cwd`` (default: the test's own cwd); output captured as text."""
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        input=input,
        env=cli_env(env, pythonpath=pythonpath),
    )


def start_cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    pythonpath: Sequence[str | Path] = (),
    **popen: Any,
) -> subprocess.Popen:
    """``longmem-etl ARGS`` started and left running (kill, signal and resume tests); ``popen``
    goes to `subprocess.Popen` (``stdout``, ``stderr``, ``text``, ``preexec_fn`` ...)."""
    return subprocess.Popen(
        [*CLI, *map(str, args)], cwd=cwd, env=cli_env(env, pythonpath=pythonpath), **popen
    )


def done_items(journals: Iterable[Path]) -> int:
    """Items marked done across migration journals, read as another process sees them (read-only;
    a journal being created or locked counts 0): how kill tests know when to pull the trigger."""
    import sqlite3

    n = 0
    for journal in journals:
        try:
            con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
            try:
                n += con.execute("SELECT count(*) FROM items WHERE state = 'done'").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            pass
    return n


def stored_memories(db: Path) -> list[dict]:
    """Every memory an embedded store at ``db`` holds, read as its export gives them."""
    from longmem_etl.api.local import LocalStore

    store = LocalStore(db, create=False)
    try:
        return store.export_account()["memories"]
    finally:
        store.close()


def journal_planned(journal: Path | None) -> bool:
    """The journal holds a finished plan (the freeze of a dump may still be running while the
    first calls go out)."""
    if journal is None or not journal.exists():
        return False
    import json
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute("SELECT v FROM migration WHERE k = 'planned'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return bool(row and json.loads(row[0]))

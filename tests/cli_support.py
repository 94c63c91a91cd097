"""Running the real CLI in a child process, as a user would (shared by the process tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``longmem-etl ARGS`` from ``cwd`` with this checkout importable; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "longmem_etl.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

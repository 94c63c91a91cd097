"""Shared by the pipelines tests: an isolated environment for Dagster subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def dagster_home(tmp: Path) -> Path:
    """A DAGSTER_HOME with telemetry off, owned by the test."""
    home = tmp / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    return home


def isolated_env(tmp: Path) -> dict[str, str]:
    """Env for a Dagster subprocess: temp DAGSTER_HOME and state dir, telemetry off, no endpoints."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LONGMEM_ETL_", "DAGSTER_")) and k != "LONGMEM_API_KEY"
    }
    env.update(
        DAGSTER_HOME=str(dagster_home(tmp)),
        DAGSTER_DISABLE_TELEMETRY="1",
        LONGMEM_ETL_HOME=str(tmp / "state"),
        PYTHONUNBUFFERED="1",
    )
    return env

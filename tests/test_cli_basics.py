"""The command's frame: help, unknown verbs, and how toolkit errors reach the user."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "longmem_etl.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_start_point_and_exit_codes() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "quickstart" in proc.stdout
    assert "exit codes" in proc.stdout


def test_unknown_verb_is_usage_error() -> None:
    proc = run_cli("no-such-verb")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr

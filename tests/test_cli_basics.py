"""The command's frame: help, unknown verbs, and how toolkit errors reach the user."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_support import cli_env, run_cli


def test_help_lists_start_point_and_exit_codes() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "quickstart" in proc.stdout
    assert "exit codes" in proc.stdout


def test_unknown_verb_is_usage_error() -> None:
    proc = run_cli("no-such-verb")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


HEAVY = ("duckdb", "pyarrow", "pandas", "dagster", "matplotlib")


@pytest.mark.parametrize("argv", [["--help"], ["sql", "--help"], ["status"], ["status", "--json"]])
def test_help_and_status_start_without_the_data_stack(argv: list[str]) -> None:
    """Every process test and every user pays the CLI's start-up: `--help` and `status` (run while
    a migration is going) read no Parquet and run no SQL, so they import none of it."""
    code = (
        "import sys\nfrom longmem_etl.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY []", proc.stderr

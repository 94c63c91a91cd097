"""The command's frame: help, unknown verbs, and how toolkit errors reach the user."""

from __future__ import annotations

from cli_support import run_cli


def test_help_lists_start_point_and_exit_codes() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "quickstart" in proc.stdout
    assert "exit codes" in proc.stdout


def test_unknown_verb_is_usage_error() -> None:
    proc = run_cli("no-such-verb")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr

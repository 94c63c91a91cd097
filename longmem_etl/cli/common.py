"""Helpers every verb shares: the ``--json`` flag, printing results, help formatting."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from longmem_etl.api.keys import DEFAULT_KEY_ENV


def add_verb(
    sub: argparse._SubParsersAction, name: str, *, help: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A verb parser whose --help ends with worked examples."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print a machine-readable JSON summary on stdout"
    )


def emit(args: argparse.Namespace, result: dict[str, Any], human: str) -> None:
    """Print ``result`` as JSON when ``--json`` was given, else the human text."""
    if getattr(args, "json", False):
        json.dump(result, sys.stdout, indent=2, default=str, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(human)


def add_key_env_flags(parser: argparse.ArgumentParser, *sides: str) -> None:
    """``--source-key-env`` / ``--target-key-env``: the *name* of the variable holding a key.

    Keys themselves are never arguments (they would end up in shell history and process lists).
    """
    for side in sides:
        parser.add_argument(
            f"--{side}-key-env",
            default=DEFAULT_KEY_ENV,
            metavar="VAR",
            help=f"environment variable holding the {side} API key, for https:// endpoints "
            f"(default {DEFAULT_KEY_ENV})",
        )

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
    from longmem_etl.storage.staging import to_remote  # mirror paths of s3:// roots -> their URLs

    if getattr(args, "json", False):
        text = json.dumps(result, indent=2, default=str, ensure_ascii=False)
        sys.stdout.write(to_remote(text) + "\n")
    else:
        print(to_remote(human))


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


def add_encrypt_flag(parser: argparse.ArgumentParser) -> None:
    """``--encrypt-to RECIPIENT`` (repeatable; default ``$LONGMEM_ETL_RECIPIENTS``)."""
    parser.add_argument(
        "--encrypt-to",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="age-encrypt every file of the new snapshot to this public key (age1..., from "
        "'longmem-etl keygen'); repeatable; default: $LONGMEM_ETL_RECIPIENTS (comma separated)",
    )


def recipients(args: argparse.Namespace) -> list[Any]:
    """The parsed ``--encrypt-to`` recipients (or the environment's); BadInput on a bad one."""
    from longmem_etl.snapshots.crypto import parse_recipients

    return parse_recipients(getattr(args, "encrypt_to", None))


def add_identity_flag(parser: argparse.ArgumentParser) -> None:
    """``--identity FILE``: the age identity that opens encrypted snapshots (``cli/main`` applies
    it for the whole run, so every reader below the verb uses it)."""
    parser.add_argument(
        "--identity",
        metavar="FILE",
        help="age identity file for encrypted snapshots (default: $LONGMEM_ETL_IDENTITY_FILE)",
    )


def add_incremental_flags(parser: argparse.ArgumentParser) -> None:
    """``--full`` / ``--full-every N``: how the new snapshot relates to the tenant's previous one."""
    parser.add_argument(
        "--full",
        action="store_true",
        help="write a full snapshot even when the tenant has one to store only changes against",
    )
    parser.add_argument(
        "--full-every",
        type=int,
        default=7,
        metavar="N",
        help="write a full snapshot after N increments in a chain (default 7)",
    )


def incremental(args: argparse.Namespace) -> Any:
    """The ``snapshots.incremental.Incremental`` policy the flags ask for."""
    from longmem_etl.snapshots.incremental import Incremental

    return Incremental(full=args.full, full_every=args.full_every)

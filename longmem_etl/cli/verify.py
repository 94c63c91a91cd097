"""``longmem-etl verify --source S --target URI``: is every source memory in the target exactly once?"""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import (
    add_identity_flag,
    add_json_flag,
    add_key_env_flags,
    add_verb,
    emit,
)
from longmem_etl.errors import EXIT_INCOMPLETE, EXIT_OK

VERB = "verify"
ORDER = 72

EXAMPLES = """\
  longmem-etl verify --source local:./a.db --target local:./b.db
  longmem-etl verify --source dump.json --spec clean.toml --target https://rememberos.ai --json
  longmem-etl verify --source SNAP --target local:./b.db --migration 3f2a9c0d1e2b4a5c
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="compare a source with a target: missing, extra, duplicated per collection and tag",
        description=(
            "Export the target once and compare it with the source (cleaned with --spec if the "
            "migration used one), per collection and container tag. Target memories are matched by "
            "their provenance marker when they have one, else by content fingerprint. Exit 0 only "
            "if exact, 3 otherwise."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--source", required=True, metavar="S", help="endpoint URI, dump file or snapshot dir"
    )
    p.add_argument("--target", required=True, metavar="URI", help="local:PATH or https://HOST")
    p.add_argument("--spec", metavar="SPEC.toml", help="clean the source with this spec first")
    p.add_argument(
        "--migration",
        metavar="ID",
        help="only this migration's markers count; unrelated target memories are not 'extra'",
    )
    add_key_env_flags(p, "source", "target")
    add_json_flag(p)
    add_identity_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.migrate import verify_source_target

    report = verify_source_target(
        args.source,
        args.target,
        spec=args.spec,
        migration_id=args.migration,
        source_key_env=args.source_key_env,
        target_key_env=args.target_key_env,
    )
    emit(args, report.as_dict(), report.render())
    return EXIT_OK if report.exact else EXIT_INCOMPLETE

"""``longmem-etl verify --source S --target URI``: is every source memory in the target exactly once?
``--repair`` deletes extra copies that carry this source's marker (keeping the oldest)."""

from __future__ import annotations

import argparse
import threading

from longmem_etl.cli.common import (
    add_identity_flag,
    add_json_flag,
    add_key_env_flags,
    add_verb,
    emit,
)
from longmem_etl.errors import EXIT_INCOMPLETE, EXIT_OK, BadInput

VERB = "verify"
ORDER = 72

EXAMPLES = """\
  longmem-etl verify --source local:./a.db --target local:./b.db
  longmem-etl verify --source dump.json --spec clean.toml --target https://rememberos.ai --json
  # only this source's memories matter (the target account holds other things too)
  longmem-etl verify --source dump.json --target local:./b.db --scoped
  # list the extra copies a repair would delete, then delete them and verify again
  longmem-etl verify --source dump.json --target local:./b.db --repair --dry-run
  longmem-etl verify --source dump.json --target local:./b.db --repair
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="compare a source with a target (missing, extra, duplicated); --repair removes "
        "extra copies",
        description=(
            "Export the target once and compare it with the source (cleaned with --spec if the "
            "migration used one), per collection and container tag. Target memories are matched by "
            "their provenance marker when they have one, else by content fingerprint. With "
            "--repair, extra copies carrying this source's marker are deleted (the oldest copy of "
            "each memory stays; journaled, resumable), then the target is verified again. Exit 0 "
            "only if exact, 3 otherwise."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--source", required=True, metavar="S", help="endpoint URI, dump file or snapshot dir"
    )
    p.add_argument("--target", required=True, metavar="URI", help="local:PATH or https://HOST")
    p.add_argument("--spec", metavar="SPEC.toml", help="clean the source with this spec first")
    p.add_argument(
        "--scoped",
        action="store_true",
        help="only this source's memories count: unrelated target memories are not 'extra' "
        "(copies of source memories under any marker still count as duplicated)",
    )
    p.add_argument(
        "--migration",
        metavar="KEY",
        help="like --scoped, naming the source key explicitly (see migrate --json: source_key)",
    )
    p.add_argument("--copy", metavar="NAME", help="the copy name given to migrate --copy")
    p.add_argument(
        "--repair",
        action="store_true",
        help="delete extra copies carrying this source's marker (keeps the oldest), then verify",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="with --repair: only list the extra copies"
    )
    p.add_argument(
        "--wait", action="store_true", help="with --repair: wait for a repair already running"
    )
    add_key_env_flags(p, "source", "target")
    add_json_flag(p)
    add_identity_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.migrate import verify_source_target

    if args.dry_run and not args.repair:
        raise BadInput("--dry-run goes with --repair (plain verify changes nothing anyway)")
    repair = None
    if args.repair:
        from longmem_etl.migrate import stop_on_signals
        from longmem_etl.migrate.repair import repair_duplicates

        stop = threading.Event()
        with stop_on_signals(stop):
            repair = repair_duplicates(
                args.source,
                args.target,
                copy=args.copy,
                dry_run=args.dry_run,
                wait=args.wait,
                source_key_env=args.source_key_env,
                target_key_env=args.target_key_env,
                stop=stop,
            )
        if stop.is_set():
            print(f"repair interrupted after {repair.deleted} deletion(s); run again to finish")
            return 130
    report = verify_source_target(
        args.source,
        args.target,
        spec=args.spec,
        migration_id=args.migration,
        scoped=args.scoped or args.repair,
        copy=args.copy,
        source_key_env=args.source_key_env,
        target_key_env=args.target_key_env,
    )
    data = report.as_dict()
    human = report.render()
    if repair is not None:
        data["repair"] = repair.as_dict()
        n = len(repair.extras)
        if repair.dry_run:
            lines = [f"repair (dry run): {n} extra cop{'y' if n == 1 else 'ies'} would be deleted"]
            lines += [
                f"  {e['collection']} {e['target_id']} (copy of {e['source_id']})"
                for e in repair.extras[:50]
            ]
            if n > 50:
                lines.append(f"  … and {n - 50} more (--json lists all)")
            human = "\n".join(lines) + "\n" + human
        else:
            human = (
                f"repair: deleted {repair.deleted} extra cop{'y' if repair.deleted == 1 else 'ies'}"
                + (f" ({repair.already_gone} already gone)" if repair.already_gone else "")
                + (
                    f" ({repair.no_longer_extra} listed earlier now the only copy: kept)"
                    if repair.no_longer_extra
                    else ""
                )
                + (" (resumed)" if repair.resumed else "")
                + f"; journal {repair.journal}\n"
                + human
            )
    emit(args, data, human)
    return EXIT_OK if report.exact else EXIT_INCOMPLETE

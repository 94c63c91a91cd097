"""``longmem-etl local seed local:PATH --from DUMP``: load a dump into an embedded tenant as it is."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_json_flag, add_verb, emit

VERB = "local"
ORDER = 15

EXAMPLES = """\
  longmem-etl local seed local:./tenants/acme.db --from longmem_etl/sample_data/acme.json
  longmem-etl local seed local:./tenants/globex.db --from export.jsonl.gz --replace --json
  longmem-etl backup --source local:./tenants/acme.db --root snapshots/   # then back it up
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="manage embedded local tenants (local:PATH SQLite stores)",
        description=(
            "Embedded Longmem tenants: one tenant in one SQLite file, usable wherever an endpoint "
            "URI is accepted (backup --source, migrate --target, ...).\n\n"
            "seed: load a dump file (any format convert reads) into a store exactly as it is — ids, "
            "timestamps, collections, every field including unknown ones — so a later backup "
            "gives the same memories back. The store is created if missing; a store that already "
            "holds data is refused unless --replace."
        ),
        examples=EXAMPLES,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    seed = actions.add_parser(
        "seed",
        help="load a dump into a local store as it is",
        description="Load DUMP into the local store local:PATH, ids and fields unchanged.",
        epilog="examples:\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seed.add_argument("store", metavar="local:PATH", help="the store, e.g. local:./acme.db")
    seed.add_argument("--from", dest="dump", required=True, metavar="DUMP", help="dump file")
    seed.add_argument(
        "--replace", action="store_true", help="empty a store that already holds data first"
    )
    add_json_flag(seed)
    seed.set_defaults(func=run)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.api.local_seed import seed_from_file

    result = seed_from_file(args.store, args.dump, replace=args.replace, progress=True)
    emit(
        args,
        result,
        f"seeded {result['store']}\n  tenant {result['tenant']}: {result['memories']} memories, "
        f"{result['collections']} collections (from {result['from']})",
    )
    return 0

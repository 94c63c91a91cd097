"""``longmem-etl dump SNAPSHOT --out FILE``: snapshot -> dump file (lossless)."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_identity_flag, add_json_flag, add_verb, emit

VERB = "dump"
ORDER = 21

EXAMPLES = """\
  longmem-etl dump snapshots/tenant=acme/snapshot=20250101T000000Z --out acme.json
  longmem-etl dump snapshots/tenant=acme/snapshot=20250101T000000Z --out acme.jsonl.gz --json
  longmem-etl dump snapshots/tenant=%41cme/snapshot=20250101T000000Z --out Acme.json --force
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="write a snapshot back out as a dump file (lossless)",
        description=(
            "Write a snapshot as a dump file; the format follows the extension (.json, .json.gz, "
            ".json.zst, .jsonl, .jsonl.gz). Every key and value of the original dump comes back "
            '(timestamps as the same instant); the file gets "format_version": 1. Atomic. An '
            "existing FILE is never replaced unless --force (exit 2 naming it)."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("snapshot", metavar="SNAPSHOT_DIR", help="a snapshot directory")
    p.add_argument("--out", required=True, metavar="FILE", help="dump file to write")
    p.add_argument("--force", action="store_true", help="replace FILE if it already exists")
    add_json_flag(p)
    add_identity_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.snapshots.dump import write_dump
    from longmem_etl.storage.staging import staged

    with staged(None, [args.snapshot]) as (_, (snapshot,)):
        result = write_dump(snapshot, args.out, progress=True, overwrite=args.force)
    emit(
        args,
        result,
        f"wrote {result['path']}: {result['memories']} memories, {result['collections']} collections",
    )
    return 0

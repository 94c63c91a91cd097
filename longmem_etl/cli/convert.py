"""``longmem-etl convert DUMP --root DIR``: dump file -> Parquet snapshot."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import (
    add_encrypt_flag,
    add_incremental_flags,
    add_json_flag,
    add_verb,
    emit,
    incremental,
    recipients,
)

VERB = "convert"
ORDER = 20

EXAMPLES = """\
  longmem-etl convert longmem_etl/sample_data/acme.json --root snapshots/
  longmem-etl convert export.jsonl.gz --root snapshots/ --tenant acme --strict
  longmem-etl convert big.json --root snapshots/ --stream --json
  LONGMEM_ETL_CONVERT_WORKERS=0 longmem-etl convert big.json.gz --root snapshots/
  AWS_ENDPOINT_URL=http://minio:9000 longmem-etl convert export.json --root s3://backups/longmem
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="convert a dump file into a Parquet snapshot",
        description=(
            "Convert a Longmem dump (.json, .json.gz, .json.zst, .jsonl, .jsonl.gz) into a snapshot "
            "ROOT/tenant=T/snapshot=TS/ (memories, collections, rejected rows, manifest). Bad rows "
            "go to rejected.parquet with a reason; a bad file exits 2 and writes nothing. A big "
            ".json is decoded by worker processes, one per CPU up to 2 (a .json.gz/.json.zst is "
            "first decompressed to a temp file under --root); LONGMEM_ETL_CONVERT_WORKERS=N in "
            "the environment sets the number, 0 turns them off. The snapshot is named after the "
            "dump's exported_at (else the conversion time); converting a dump whose content "
            "(sha256) a snapshot of the tenant already holds writes nothing, says so and exits 0 "
            '(--json: "already_present": true). The tenant name is kept exactly (any script, '
            "case, / or spaces); docs/snapshots.md describes the folder encoding."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("dump", metavar="DUMP", help="the dump file")
    p.add_argument(
        "--root",
        required=True,
        metavar="DIR",
        help="snapshot root: a directory or s3://BUCKET/PREFIX",
    )
    p.add_argument(
        "--tenant", metavar="T", help="tenant name (default: the dump's, else file stem)"
    )
    p.add_argument(
        "--strict", action="store_true", help="fail (exit 2, nothing written) on any rejected row"
    )
    p.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "read a .json with ijson: one process, bounded memory, several times slower (default: "
            "big .json files go to worker processes, bounded too; ijson above 900 MiB only when "
            "they cannot take the file; JSONL always streams)"
        ),
    )
    add_json_flag(p)
    add_encrypt_flag(p)
    add_incremental_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.snapshots.convert import convert_dump
    from longmem_etl.storage.staging import staged

    with staged(args.root, write=True, tenant=args.tenant) as (root, _):
        result = convert_dump(
            args.dump,
            root,
            tenant=args.tenant,
            strict=args.strict,
            stream=args.stream,
            recipients=recipients(args),
            incremental=incremental(args),
        )
    if result.already_present:
        human = (
            f"already present: {result.path} holds this dump's content (same sha256) for tenant "
            f"{result.tenant}; nothing written"
        )
        emit(args, result.to_json(), human)
        return 0
    emit(args, result.to_json(), result.render())
    return 0

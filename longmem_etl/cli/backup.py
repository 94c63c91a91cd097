"""``longmem-etl backup --source URI --root DIR``: endpoint -> verified snapshot (+ retention)."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import (
    add_encrypt_flag,
    add_incremental_flags,
    add_json_flag,
    add_key_env_flags,
    add_verb,
    emit,
    incremental,
    recipients,
)

VERB = "backup"
ORDER = 30

EXAMPLES = """\
  longmem-etl backup --source local:./tenants/acme.db --root snapshots/
  LONGMEM_API_KEY=... longmem-etl backup --source https://rememberos.ai --root snapshots/ --keep 7
  longmem-etl backup --source https://rememberos.ai --source-key-env ACME_KEY --root snapshots/ \\
      --tenant acme --paged --page-size 100 --json
  AWS_PROFILE=backups longmem-etl backup --source local:./tenants/acme.db --tenant acme \
      --root s3://my-backups/longmem --keep 30      # S3/MinIO/R2: docs/s3.md
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="back up an endpoint into a verified Parquet snapshot",
        description=(
            "Export a Longmem account (one export_account() call, or --paged through collections() "
            "and list_memories(include_archived=True) for accounts too big for one call) into a new "
            "snapshot ROOT/tenant=T/snapshot=TS/. Counts are checked against the source's own "
            "health() before anything is committed; paged backups also fail if an id comes twice. "
            "A failed or interrupted backup leaves no snapshot. --keep N then deletes all but the "
            "newest N snapshots of the tenant. The API key is read from the environment only."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("--source", required=True, metavar="URI", help="local:PATH or https://HOST")
    p.add_argument(
        "--root",
        required=True,
        metavar="DIR",
        help="snapshot root: a directory or s3://BUCKET/PREFIX",
    )
    p.add_argument(
        "--tenant",
        metavar="T",
        help="tenant name (default: the export's; with --paged the local store's, or the https host)",
    )
    p.add_argument(
        "--paged", action="store_true", help="page through list_memories (bounded memory)"
    )
    p.add_argument(
        "--page-size", type=int, default=100, metavar="N", help="memories per page (default 100)"
    )
    p.add_argument("--keep", type=int, metavar="N", help="keep only the newest N snapshots")
    add_key_env_flags(p, "source")
    add_json_flag(p)
    add_encrypt_flag(p)
    add_incremental_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.backup import backup
    from longmem_etl.storage.staging import staged

    with staged(args.root, write=True, tenant=args.tenant) as (root, _):
        r = backup(
            args.source,
            root,
            tenant=args.tenant,
            paged=args.paged,
            keep=args.keep,
            key_env=args.source_key_env,
            page_size=args.page_size,
            progress=True,
            recipients=recipients(args),
            incremental=incremental(args),
        )
    emit(args, r.to_json(), r.render())
    return 0

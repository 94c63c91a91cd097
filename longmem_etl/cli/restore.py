"""``longmem-etl restore``: bring back what a snapshot has and the account lacks (or --mirror it)."""

from __future__ import annotations

import argparse
import sys

from longmem_etl.api.keys import DEFAULT_KEY_ENV
from longmem_etl.cli.common import add_identity_flag, add_json_flag, add_verb, emit

VERB = "restore"
ORDER = 47

EXAMPLES = """\
  # accidental deletion: put back what the newest snapshot before the mistake has
  longmem-etl restore --root snapshots/ --tenant acme --as-of 2026-11-30T09:00:00Z \\
      --target local:./tenants/acme.db --dry-run
  longmem-etl restore --root snapshots/ --tenant acme --as-of 2026-11-30T09:00:00Z \\
      --target local:./tenants/acme.db
  # one collection, a few ids, or a SQL condition over the snapshot's columns
  longmem-etl restore snapshots/tenant=acme/snapshot=20261129T020000Z --target local:acme.db \\
      --collections crm support --where "importance >= 0.5 AND NOT archived"
  # tenant rollback: make the account equal to the snapshot (deletes what it lacks)
  longmem-etl restore snapshots/tenant=acme/snapshot=20261129T020000Z --target local:acme.db \\
      --mirror --yes --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="restore a tenant from a snapshot, as of a point in time",
        description=(
            "Bring back into an account what a snapshot holds and the account lacks. A memory "
            "counts as present when the account has one with the same id, or one carrying the "
            "provenance marker metadata._longmem_etl.source_id naming it (what an earlier "
            "restore left), so nothing is sent twice; memories written since the snapshot are "
            "kept. --mirror also deletes what the snapshot does not have (in the selected "
            "collections/tags), after showing the count. Runs through the migration engine: "
            "resumable (run the same command again after a kill or Ctrl-C), exactly once, "
            "verified. Exit 0 exact, 3 not exact, 130 interrupted, 2 bad usage."
        ),
        examples=EXAMPLES,
    )
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT", help="a snapshot directory")
    p.add_argument("--root", metavar="DIR", help="snapshot root (with --tenant and --as-of)")
    p.add_argument("--tenant", metavar="T", help="tenant to restore (with --root)")
    p.add_argument(
        "--as-of",
        metavar="TIMESTAMP",
        help="use the newest snapshot at or before this instant (ISO 8601; no offset = UTC; "
        "a bare date = its 00:00 UTC)",
    )
    p.add_argument("--target", required=True, metavar="URI", help="local:PATH or https://HOST")
    p.add_argument("--collections", nargs="+", metavar="NAME", help="only these collections")
    p.add_argument("--tags", nargs="+", metavar="TAG", help="only these container tags")
    p.add_argument(
        "--ids", dest="ids_file", metavar="FILE", help="only these ids (one a line, or a JSON list)"
    )
    p.add_argument(
        "--where",
        metavar="SQL",
        help="only rows where this DuckDB expression over the snapshot's columns is true "
        "(id, collection, text, importance, category, metadata, container_tag, pinned, "
        "archived, created_at, ...); no file access",
    )
    p.add_argument(
        "--mirror", action="store_true", help="also delete what the snapshot does not have"
    )
    p.add_argument("--yes", action="store_true", help="with --mirror: do not ask on a terminal")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="show would-add / would-remove / would-differ with examples; change nothing",
    )
    p.add_argument(
        "--mode",
        choices=["import", "add"],
        default="import",
        help="import_memories (keeps created_at, pinned, ...; default) or add_many",
    )
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="parallel requests")
    p.add_argument(
        "--work-dir",
        metavar="DIR",
        help="where the restore keeps its state (default $LONGMEM_ETL_HOME/restores/<id>/, "
        "the same from any directory)",
    )
    p.add_argument(
        "--target-key-env",
        default=DEFAULT_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the target API key (default {DEFAULT_KEY_ENV})",
    )
    add_json_flag(p)
    add_identity_flag(p)
    p.set_defaults(func=run)


def _confirm(args: argparse.Namespace):
    def ask(n: int) -> bool:
        print(f"--mirror: deleting {n} memories the snapshot does not have", file=sys.stderr)
        if args.yes or not sys.stdin.isatty():
            return True
        answer = input("continue? [y/N] ").strip().lower()
        return answer in ("y", "yes")

    return ask


def run(args: argparse.Namespace) -> int:
    import threading

    from longmem_etl.migrate import stop_on_signals
    from longmem_etl.restore import RestoreOptions, restore
    from longmem_etl.storage.staging import staged

    # an s3:// root or snapshot is mirrored privately for the run (docs/s3.md)
    with staged(args.root, [args.snapshot], tenant=args.tenant) as (root, (snapshot,)):
        opts = RestoreOptions(
            target=args.target,
            snapshot=snapshot,
            root=root,
            tenant=args.tenant,
            as_of=args.as_of,
            collections=args.collections,
            tags=args.tags,
            ids_file=args.ids_file,
            where=args.where,
            mirror=args.mirror,
            dry_run=args.dry_run,
            mode=args.mode,
            concurrency=args.concurrency,
            work_dir=args.work_dir,
            key_env=args.target_key_env,
            show_progress=sys.stderr.isatty() and not args.json,
        )
        with stop_on_signals(threading.Event()) as stop:
            r = restore(opts, stop=stop, before_remove=_confirm(args))
    emit(args, r.to_json(), r.render())
    return r.exit_code

"""``longmem-etl clean SNAPSHOT --spec SPEC.toml --root DIR``: apply a transform spec -> new snapshot."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import (
    add_encrypt_flag,
    add_identity_flag,
    add_incremental_flags,
    add_json_flag,
    add_verb,
    emit,
    incremental,
    recipients,
)
from longmem_etl.transforms.spec import STEPS

VERB = "clean"
ORDER = 50

EXAMPLES = """\
  longmem-etl clean snapshots/tenant=globex/snapshot=20251120T000000Z \\
      --spec longmem_etl/sample_data/specs/migration-hygiene.toml --root snapshots/
  longmem-etl clean SNAP --spec longmem_etl/sample_data/specs/gdpr-minimise.toml --root out/ --dry-run
  longmem-etl clean SNAP --spec spec.toml --root snapshots/ --now 2025-11-20T00:00:00Z --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="clean a snapshot with a TOML spec of steps into a new snapshot",
        description=(
            "Apply the ordered [[steps]] of a transform spec (drop_archived, drop_expired, dedup, "
            "redact, filter, sql, ...; see schemas/transform-spec.schema.json) to a snapshot and "
            "write a NEW snapshot under ROOT whose parent is the source. Every removed row is kept "
            "in its rejected.parquet with the step name and a reason; the per-step table shows rows "
            "in / out / rejected. A bad spec exits 2 before any data is read. Spec SQL (filter.where: one "
            "expression; sql.query: one SELECT over `input`) runs in a DuckDB sandbox that reads "
            "only the source's Parquet and writes nothing (docs/spec.md). Ctrl-C stops at once "
            "(exit 130), leaving nothing half-written."
        ),
        examples=EXAMPLES,
    )
    p.epilog += "\nstep kinds (options: schemas/transform-spec.schema.json):\n" + "\n".join(
        f"  {kind:20} {sdef.doc}" for kind, sdef in STEPS.items()
    )
    p.add_argument("snapshot", metavar="SNAPSHOT_DIR", help="the snapshot directory to clean")
    p.add_argument("--spec", required=True, metavar="SPEC.toml", help="transform spec")
    p.add_argument(
        "--root", required=True, metavar="DIR", help="snapshot root for the new snapshot"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="run the steps and print counts; write nothing"
    )
    p.add_argument(
        "--now",
        metavar="ISO",
        help="the time drop_expired compares against (default: current time; a step's own 'now' wins)",
    )
    add_json_flag(p)
    add_identity_flag(p)
    add_encrypt_flag(p)
    add_incremental_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.transforms.run import clean_snapshot, load_spec
    from longmem_etl.transforms.spec import parse_instant

    now = parse_instant(args.now, "--now") if args.now else None
    spec = load_spec(args.spec)  # validated before any data is touched
    from longmem_etl.storage.staging import staged

    with staged(args.root, [args.snapshot], write=not args.dry_run) as (root, (snapshot,)):
        result = clean_snapshot(
            snapshot,
            spec,
            root,
            dry_run=args.dry_run,
            now=now,
            recipients=recipients(args),
            incremental=incremental(args),
        )
    emit(args, result.to_json(), result.render())
    return 0

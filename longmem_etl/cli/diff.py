"""``longmem-etl diff SNAP_A SNAP_B``: memories added, removed and changed between two snapshots."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_identity_flag, add_json_flag, add_verb, emit

VERB = "diff"
ORDER = 80

EXAMPLES = """\
  longmem-etl diff snapshots/tenant=acme/snapshot=20250101T000000Z \\
                   snapshots/tenant=acme/snapshot=20250102T000000Z
  longmem-etl diff OLD NEW --json --limit 0          # every difference, machine-readable
  # the same query in DuckDB yourself: see longmem_etl/snapshots/diff.sql
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="compare two snapshots: added / removed / changed memories",
        description=(
            "Compare the memories of two snapshots by id, in DuckDB over their Parquet files: "
            "added (only in B), removed (only in A), changed (same id, any field differs: typed "
            "columns, metadata, unknown fields). Prints counts, which fields changed, and the "
            "first --limit differences. The query is longmem_etl/snapshots/diff.sql; run it in "
            "DuckDB after SET VARIABLE snap_a = '...'; SET VARIABLE snap_b = '...';"
        ),
        examples=EXAMPLES,
    )
    p.add_argument("snap_a", metavar="SNAP_A", help="the older snapshot directory")
    p.add_argument("snap_b", metavar="SNAP_B", help="the newer snapshot directory")
    p.add_argument(
        "--limit",
        type=int,
        default=50,
        metavar="N",
        help="differences to list (0 = all; default 50)",
    )
    add_json_flag(p)
    add_identity_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.errors import BadInput
    from longmem_etl.snapshots.diff import diff_snapshots

    if args.limit < 0:
        raise BadInput(f"--limit must be >= 0 (got {args.limit})")
    from longmem_etl.storage.staging import staged

    with staged(None, [args.snap_a, args.snap_b]) as (_, (a, b)):
        d = diff_snapshots(a, b, limit=args.limit or None)
    emit(args, d.to_json(), d.render())
    return 0

"""``longmem-etl forget --root ROOT [--keep-* ...]``: retention by restic's rules."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_json_flag, add_verb, emit

VERB = "forget"
ORDER = 32

EXAMPLES = """\
  longmem-etl forget --root snapshots/ --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  longmem-etl forget --root snapshots/ --tenant acme --keep-last 3 --keep-within 30d --json
  longmem-etl forget --root snapshots/ --keep-daily unlimited      # one per day, forever
"""


def _count(text: str) -> int:
    if text.strip().lower() == "unlimited":
        return -1
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (or 'unlimited')") from None
    if n < -1:
        raise argparse.ArgumentTypeError(f"{n} is negative (use 'unlimited' or -1 for all)")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="remove old snapshots by a retention policy (restic's --keep-* rules)",
        description=(
            "Keep, per tenant, the snapshots a policy names and remove the rest. Rules are "
            "restic's: buckets are UTC hours/days/ISO weeks/months/years; each --keep-X N keeps "
            "the newest snapshot of the N newest periods that have one (and the oldest snapshot "
            "too while counts are left); --keep-within keeps everything newer than the newest "
            "snapshot minus the duration; rules combine by union. The newest snapshot that "
            "verifies (sizes + sha256) is never removed. A removal takes the manifest away "
            "first, then deletes only the files that manifest lists; an interrupted forget is "
            "finished by the next one. A snapshot an unfinished migration reads as its source "
            "(and its chain) is kept, with the migration named, whatever the policy says. "
            "--dry-run shows what would go, with each kept snapshot's reasons."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--root",
        required=True,
        metavar="DIR",
        help="snapshot root: a directory or s3://BUCKET/PREFIX",
    )
    p.add_argument("--tenant", metavar="T", help="only this tenant (default: every tenant)")
    for rule, what in (
        ("last", "the N newest snapshots"),
        ("hourly", "the newest snapshot of each of the N newest hours"),
        ("daily", "the newest snapshot of each of the N newest days"),
        ("weekly", "the newest snapshot of each of the N newest ISO weeks"),
        ("monthly", "the newest snapshot of each of the N newest months"),
        ("yearly", "the newest snapshot of each of the N newest years"),
    ):
        p.add_argument(f"--keep-{rule}", type=_count, default=0, metavar="N", help=f"keep {what}")
    p.add_argument(
        "--keep-within",
        metavar="DURATION",
        help="keep every snapshot newer than the newest one minus DURATION (e.g. 7d, 36h, 1y6m)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the decision; remove nothing")
    add_json_flag(p)
    p.set_defaults(func=run)


def policy_from_args(args: argparse.Namespace):
    """The ``retention.Policy`` the flags describe (shared by verbs that take --keep-*)."""
    from longmem_etl.retention import Policy, parse_within

    return Policy(
        last=args.keep_last,
        hourly=args.keep_hourly,
        daily=args.keep_daily,
        weekly=args.keep_weekly,
        monthly=args.keep_monthly,
        yearly=args.keep_yearly,
        within=parse_within(args.keep_within) if args.keep_within else None,
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from longmem_etl.retention import forget
    from longmem_etl.storage.staging import staged

    policy = policy_from_args(args)
    with staged(args.root, write=not args.dry_run, tenant=args.tenant) as (root, _):
        r = forget(Path(root), policy, tenant=args.tenant, dry_run=args.dry_run)
    emit(args, r.to_json(), r.render(args.root, args.tenant))
    return 0

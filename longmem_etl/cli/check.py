"""``longmem-etl check --root ROOT``: find damaged or stale snapshots before a restore needs them."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_json_flag, add_verb, emit

VERB = "check"
ORDER = 75

EXAMPLES = """\
  longmem-etl check --root snapshots/                        # manifests, sizes, Parquet footers, row counts
  longmem-etl check --root snapshots/ --read-data            # also every byte's sha256
  longmem-etl check --root snapshots/ --read-data-subset 10% # sha256 of a random tenth of the files
  longmem-etl check --root snapshots/ --tenant acme --max-age 36h --json

exit codes: 0 healthy; 3 a snapshot is damaged or a tenant's newest good snapshot is older than
--max-age (each named); 2 bad usage (no such root, bad duration).
"""


def _share(text: str) -> float:
    s = text.strip().removesuffix("%")
    try:
        value = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a percentage like 10%") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: must be between 0% and 100%")
    return value / 100


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="verify every snapshot under a root (checksums, sizes, row counts, freshness)",
        description=(
            "Check every snapshot under --root against its manifest: the manifest's own checksum, "
            "file names inside the snapshot, sizes, Parquet footers and row counts; with "
            "--read-data the sha256 of every file. Lists abandoned temp dirs, snapshot dirs "
            "without a manifest and files a manifest does not list (debris: reported, not damage). "
            "With --max-age, a tenant whose newest intact snapshot is older is stale."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--root", required=True, help="folder or s3://BUCKET/PREFIX holding tenant=*/snapshot=*/"
    )
    p.add_argument("--tenant", help="check only this tenant's snapshots")
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--read-data", action="store_true", help="hash every file and compare with its sha256"
    )
    data.add_argument(
        "--read-data-subset",
        type=_share,
        metavar="P%",
        help="hash a random P%% of the files (repeated runs cover everything over time)",
    )
    p.add_argument(
        "--max-age",
        metavar="DURATION",
        help="flag a tenant whose newest intact snapshot is older than this (e.g. 36h, 7d, 1d12h)",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def _check(root: str, **kw: object) -> object:
    """``check_root`` on a local root; on an ``s3://`` root on a mirror of its committed snapshots,
    after removing abandoned uploads (listed as debris ``removed``; other manifest-less prefixes
    are listed as they are)."""
    from longmem_etl.snapshots.check import check_root
    from longmem_etl.storage import is_remote

    if not is_remote(root):
        return check_root(root, **kw)  # type: ignore[arg-type]
    from longmem_etl.storage import remote
    from longmem_etl.storage.staging import mirror

    with mirror(root, sweep=True) as m:
        report = check_root(m.local, **kw)  # type: ignore[arg-type]
        for d in m.swept:
            report.debris.append({"path": d["path"], "kind": d["kind"], "state": "removed"})
        for d in remote.debris(m.store, m.groups):
            report.debris.append({"path": d["path"], "kind": d["kind"], "state": d["state"]})
    return report


def run(args: argparse.Namespace) -> int:
    from longmem_etl.snapshots.check import parse_duration

    max_age = parse_duration(args.max_age) if args.max_age is not None else None
    share = 1.0 if args.read_data else (args.read_data_subset or 0.0)
    report = _check(args.root, tenant=args.tenant, read_data=share, max_age=max_age)
    lines = []
    for s in report.snapshots:
        lines.extend(f"DAMAGED {p}" for p in s.problems)
        if s.extra_files:
            lines.append(
                f"note: {s.path}: files the manifest does not list: {', '.join(s.extra_files)}"
            )
    for t in report.tenants:
        if t.stale:
            age = (
                f"newest intact snapshot {t.newest_verified_at:%Y-%m-%dT%H:%M:%SZ}"
                if t.newest_verified_at
                else "no intact snapshot"
            )
            lines.append(f"STALE tenant {t.tenant}: {age}, older than --max-age {args.max_age}")
    for d in report.debris:
        lines.append(f"debris ({d['kind']}, {d['state']}): {d['path']}")
    unsealed = sum(1 for s in report.snapshots if s.ok and not s.sealed)
    if unsealed:
        lines.append(
            f"note: {unsealed} snapshot(s) have an older manifest without its own checksum"
        )
    damaged = sum(1 for s in report.snapshots if not s.ok)
    stale = sum(1 for t in report.tenants if t.stale)
    hashed = (
        "all files hashed"
        if share >= 1
        else (f"{share * 100:g}% of files hashed" if share else "sizes and footers")
    )
    lines.append(
        f"{len(report.snapshots)} snapshots of {len(report.tenants)} tenants checked ({hashed}): "
        f"{damaged} damaged, {stale} stale tenants, {len(report.debris)} debris"
        + ("" if report.healthy else " -> NOT healthy")
    )
    emit(args, report.to_json(), "\n".join(lines))
    return report.exit_code

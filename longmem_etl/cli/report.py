"""``longmem-etl report --root ROOT``: what each tenant's snapshot holds, as one offline HTML page.

A thin face over ``longmem_etl.report.build_report`` / ``write_report`` (the Dagster asset
``memories_report`` calls the same two).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from longmem_etl.cli.common import add_verb, emit

VERB = "report"
ORDER = 35

EXAMPLES = """\
  longmem-etl report --root snapshots/                              # every tenant -> report.html
  longmem-etl report --root snapshots/ --tenant acme --out acme.html
  longmem-etl report --root snapshots/ --tenant acme --snapshot 20250101T000000Z --out old.html
  longmem-etl report --root snapshots/ --json > figures.json      # the same figures, no HTML
  longmem-etl report --root snapshots/ --json --out report.html   # both

figures (per tenant, newest snapshot unless --snapshot): memories created per week by collection
and category; container tags; importance and text-length histograms; pinned / archived / expired /
superseded / stale shares; exact and normalised duplicates per collection; personal-data findings
per kind (counts, masked examples); rejected rows by stage and reason; added / removed / changed
since the previous snapshot; verification summaries of migrations run from this root.
Every number is a DuckDB query over the same views `longmem-etl sql` has (see docs/report.md).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="analyst report: charts of what each tenant's snapshot holds (offline HTML)",
        description=(
            "Build one self-contained HTML page (inline SVG charts, no network, printable) of what "
            "each tenant's snapshot holds, from DuckDB queries over the snapshots under --root. "
            "With --json, print the same figures as JSON (and write HTML only if --out is given)."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--root", required=True, help="folder or s3://BUCKET/PREFIX holding tenant=*/snapshot=*/"
    )
    p.add_argument(
        "--tenant",
        action="append",
        metavar="T",
        help="tenant to report (repeat for several; default: every tenant under --root)",
    )
    p.add_argument(
        "--snapshot",
        metavar="TS",
        help="report this snapshot (its name, e.g. 20250101T000000Z) instead of the newest; "
        "needs exactly one --tenant",
    )
    p.add_argument(
        "--out", type=Path, help="HTML file to write (default report.html; with --json: none)"
    )
    p.add_argument(
        "--stale-days",
        type=int,
        default=180,
        metavar="N",
        help="a memory not updated for N days before the snapshot is stale (default 180)",
    )
    p.add_argument(
        "--top", type=int, default=15, metavar="N", help="container tags to list (default 15)"
    )
    p.add_argument(
        "--migrations",
        action="append",
        type=Path,
        metavar="DIR",
        help="where migration work dirs are (repeatable; default: the state home's migrations/ "
        "($LONGMEM_ETL_HOME), .longmem-etl/migrations in or beside the root or in the current "
        "directory, and migrations/ beside the root)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the figures as JSON on stdout (for scripts)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.errors import BadInput
    from longmem_etl.report import build_report, write_report

    out = args.out if args.out is not None or args.json else Path("report.html")
    if out is not None and out.is_dir():
        raise BadInput(f"--out {out}: is a directory (give a file name, e.g. {out}/report.html)")
    from longmem_etl.storage.staging import staged

    with staged(args.root) as (root, _):
        report = build_report(
            Path(root),
            args.tenant,
            snapshot=args.snapshot,
            migration_dirs=args.migrations,
            stale_days=args.stale_days,
            top=args.top,
        )
    result = report.to_json()
    if out is not None:
        try:
            result["html"] = str(write_report(report, out).resolve())
        except OSError as exc:
            raise BadInput(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    lines = []
    for t in report.tenants:
        ov = t.figures["overview"].records()[0]
        lines.append(
            f"tenant {t.tenant}: snapshot {t.snapshot}, {ov['memories']:,} memories in "
            f"{ov['collections']} collections"
        )
    if out is not None:
        lines.append(f"report: {result['html']}")
    emit(args, result, "\n".join(lines))
    return 0

"""``longmem-etl migrate --source S --target URI``: resumable, exactly-once upload with verification."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING

from longmem_etl.cli.common import (
    add_identity_flag,
    add_json_flag,
    add_key_env_flags,
    add_verb,
    emit,
)
from longmem_etl.migrate.plan import DEFAULT_MAX_BYTES, MAX_CHUNK_ITEMS

if TYPE_CHECKING:
    from longmem_etl.migrate import MigrationOptions

VERB = "migrate"
ORDER = 70

EXAMPLES = """\
  # plan only: counts per collection, chunks and bytes; touches nothing
  longmem-etl migrate --source local:./a.db --target local:./b.db --dry-run
  # tenant A -> tenant B, cleaned on the way, through a flaky target
  longmem-etl migrate --source local:./a.db --spec sample_data/specs/migration-hygiene.toml \\
      --target 'local:./b.db?fail_rate=0.1&ambiguous_rate=0.02&latency_ms=50'
  # a dump file into the hosted API, keeping pinned/archived/timestamps
  TARGET_KEY=... longmem-etl migrate --source dump.json.zst --target https://rememberos.ai \\
      --target-key-env TARGET_KEY --mode import --concurrency 8
  # interrupted or crashed? run the very same command again: it resumes.
  longmem-etl status .longmem-etl/migrations/<id>/journal.sqlite

Each item carries metadata["_longmem_etl"] = {"source_id", "migration"} so nothing is ever sent
twice (--no-provenance: content fingerprints instead). Outputs in the migration's directory:
journal.sqlite, id_map.parquet, dead_letter.jsonl, verification.json. Replay dead letters after
fixing their "item"s:  longmem-etl migrate --source .../dead_letter.jsonl --target URI
Exit: 0 verified exact; 3 dead letters or mismatch; 130 interrupted (resumable); 2 bad input.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="upload memories to an endpoint: chunked, resumable, exactly once, verified",
        description=(
            "Freeze the source (endpoint URI, dump file or snapshot dir) as a snapshot in the "
            "migration's directory, clean it with --spec, plan deterministic chunks, and upload them "
            "with N workers through retries, 429 back-off, bisection of refused chunks and "
            "reconciliation of ambiguous writes; then verify the target against the plan. The "
            "journal makes re-running the same command resume where it stopped."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "--source", required=True, metavar="S", help="endpoint URI, dump file or snapshot dir"
    )
    p.add_argument(
        "--target", required=True, metavar="URI", help="local:PATH[?faults] or https://HOST"
    )
    p.add_argument(
        "--mode",
        choices=("add", "import"),
        default="add",
        help="add: add_many (text, metadata, importance, category, source, container_tag); "
        "import: import_memories (all fields). Default add",
    )
    p.add_argument(
        "--spec", metavar="SPEC.toml", help="clean the frozen source with this transform spec"
    )
    p.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="upload workers (default 4)"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=MAX_CHUNK_ITEMS,
        metavar="N",
        help=f"items per call, at most {MAX_CHUNK_ITEMS} (default {MAX_CHUNK_ITEMS})",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="B",
        help=f"item JSON bytes per call (default {DEFAULT_MAX_BYTES})",
    )
    p.add_argument(
        "--journal",
        metavar="PATH",
        help="journal file (default .longmem-etl/migrations/<migration id>/journal.sqlite)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard the journal and start over (items already landed are recognised by marker)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan; no journal, no target call"
    )
    p.add_argument(
        "--no-provenance",
        action="store_true",
        help="add no metadata marker; reconcile and verify by content fingerprint",
    )
    add_key_env_flags(p, "source", "target")
    add_json_flag(p)
    add_identity_flag(p)
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> MigrationOptions:
    from longmem_etl.migrate import MigrationOptions

    return MigrationOptions(
        source=args.source,
        target=args.target,
        mode=args.mode,
        spec=args.spec,
        concurrency=args.concurrency,
        chunk_size=args.chunk_size,
        max_bytes=args.max_bytes,
        journal=args.journal,
        restart=args.restart,
        dry_run=args.dry_run,
        provenance=not args.no_provenance,
        source_key_env=args.source_key_env,
        target_key_env=args.target_key_env,
    )


def run(args: argparse.Namespace) -> int:
    from longmem_etl.migrate import run_migration, stop_on_signals

    opts = options_from_args(args)
    stop = threading.Event()
    with stop_on_signals(stop):
        result = run_migration(opts, stop=stop)
    data = result.as_dict()
    if result.dry_run:
        from longmem_etl.migrate.plan import PlanSummary

        plan = result.plan or {}
        summary = PlanSummary(
            mode=plan["mode"],
            chunk_size=plan["chunk_size"],
            max_bytes=plan["max_bytes"],
            collections=plan["collections"],
        )
        emit(
            args,
            data,
            f"dry run (migration {result.migration_id}): nothing written, no target call\n"
            + summary.render(),
        )
        return result.exit_code
    c = result.counts
    if result.interrupted:
        print(
            f"longmem-etl migrate: interrupted — {c.get('items_done', 0)}/{c.get('items_total', 0)} items "
            f"done, journal flushed ({result.journal}).\nresume with: {result.resume_command}",
            file=sys.stderr,
        )
        if args.json:
            emit(args, data, "")
        return result.exit_code
    up = result.upload
    lines = [
        f"migration {result.migration_id} ({'resumed' if result.resumed else 'new'}): "
        f"{c['items_done']}/{c['items_total']} items landed in {c['chunks_total']} chunks, "
        f"{c['items_dead']} dead-lettered, {result.seconds:.1f}s",
        f"calls {up['calls']}, 429s {up['rate_limited']}, transient errors {up['transient_errors']}, "
        f"ambiguous {up['ambiguous']} (reconciled {up['reconciled_items']} items), "
        f"bisections {up['bisections']}, concurrency low {up['concurrency_lowest']}/{up['concurrency_max']}",
    ]
    ver = result.verification or {}
    t = ver.get("totals", {})
    lines.append(
        f"verification: {'EXACT' if ver.get('exact') else 'MISMATCH'} — missing {t.get('missing')}, "
        f"duplicated {t.get('duplicated')}, extra {t.get('extra')}"
    )
    for name, path in result.outputs.items():
        lines.append(f"  {name}: {path}")
    if result.dead_letters:
        lines.append(
            f"{result.dead_letters} item(s) refused by the target: see {result.outputs.get('dead_letter')}"
        )
    emit(args, data, "\n".join(lines))
    return result.exit_code

"""``longmem-etl migrate --source S --target URI``: resumable, exactly-once upload with verification."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
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
  # interrupted or crashed? run the same command again, from any directory: it resumes.
  longmem-etl status            # every migration under $LONGMEM_ETL_HOME, with its resume command
  # spec edited since? the re-run sends only what the target lacks; differing items are listed
  longmem-etl migrate --source dump.json --spec new.toml --target local:./b.db --update-changed
  # a second copy on purpose (its own markers, exactly once per copy name)
  longmem-etl migrate --source dump.json --target local:./b.db --copy sandbox-2

Each item carries metadata["_longmem_etl"] = {"source", "source_id", "content"}: the source's
stable key (account, or dump tenant), the memory's id and its payload fingerprint. Any run whose
journal cannot prove the state first reads the target once and sends only what is missing
(--no-provenance: content fingerprints instead). State lives in $LONGMEM_ETL_HOME (default
~/.local/state/longmem-etl), keyed by source + target + mode; one run at a time per migration
(a second exits 2 naming the holder, or waits with --wait). Outputs in the migration's directory:
journal.sqlite, id_map.parquet, dead_letter.jsonl, verification.json. Replay dead letters after
fixing their "item"s:  longmem-etl migrate --source .../dead_letter.jsonl --target URI
Exit: 0 verified exact; 3 dead letters or mismatch; 130 interrupted (resumable); 2 bad input or
another run holds the lock.
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
        help="journal file (default $LONGMEM_ETL_HOME/migrations/<migration id>/journal.sqlite); "
        "its directory must be empty or the tool's own",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard the journal and plan again (items already landed are recognised by marker)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another run holds this migration's lock, wait for it (default: exit 2 at once)",
    )
    p.add_argument(
        "--update-changed",
        action="store_true",
        help="items already in the target whose payload now differs (e.g. spec edited): update "
        "them in place (default: list them and leave them)",
    )
    p.add_argument(
        "--copy",
        metavar="NAME",
        help="make a deliberate extra copy named NAME (its own markers; exactly once per NAME)",
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
        wait=args.wait,
        update_changed=args.update_changed,
        copy=args.copy,
    )


# Flags a resume command never repeats (they are one-off requests, not part of the migration).
# identity: where a key lives is not written into journals; a resume gives it again (or the env var)
NOT_RESUMED = frozenset({"help", "json", "dry_run", "restart", "func", "identity"})
# Parser dest -> how to read it from MigrationOptions, where the names differ.
FROM_OPTIONS = {"no_provenance": lambda o: not o.provenance}
PATH_DESTS = frozenset({"spec", "journal"})


def parser() -> argparse.ArgumentParser:
    """The verb's own parser (the same `register` builds into the CLI)."""
    top = argparse.ArgumentParser(prog="longmem-etl")
    register(top.add_subparsers())
    return top._subparsers._group_actions[0].choices[VERB]  # type: ignore[union-attr]


def _absolute(value: str) -> str:
    from longmem_etl.api.endpoints import is_endpoint

    if value.lower().startswith("local:"):
        path, sep, query = value[len("local:") :].partition("?")
        return "local:" + str(Path(path).expanduser().absolute()) + sep + query
    if is_endpoint(value):
        return value
    return str(Path(value).expanduser().absolute())


def command_for(opts: MigrationOptions, journal_path: Path | None = None) -> str:
    """The command line that continues ``opts``'s migration, generated from the parser: every
    flag whose value is not its default is repeated (a flag added later cannot be dropped), paths
    are absolute, and the journal is named explicitly so any cwd and any home find it."""
    import shlex

    argv = ["longmem-etl", VERB]
    for action in parser()._actions:
        dest = action.dest
        if dest in NOT_RESUMED or not action.option_strings:
            continue
        get = FROM_OPTIONS.get(dest)
        value = get(opts) if get else getattr(opts, dest, action.default)
        if dest == "journal" and journal_path is not None:
            value = str(journal_path)
        if value is None or value is False or (value == action.default and not action.required):
            continue
        flag = action.option_strings[-1] if dest != "source" else "--source"
        if action.nargs == 0:
            argv.append(flag)
            continue
        text = str(value)
        if dest in PATH_DESTS or dest in ("source", "target"):
            text = _absolute(text)
        argv += [flag, text]
    return shlex.join(argv)


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
    h = result.holdings or {}
    line = f"already in the target from earlier runs: {h.get('already_in_target', 0)}"
    if result.replanned:
        line += f" (planned afresh: {result.replanned})"
    lines.append(line)
    if h.get("changed"):
        waiting = h["changed"] - h.get("updated", 0)
        lines.append(
            f"{h['changed']} item(s) in the target differ from what this plan would send "
            f"({h.get('updated', 0)} updated"
            + (f", {waiting} left as they are — --update-changed updates them" if waiting else "")
            + "; --json lists them)"
        )
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

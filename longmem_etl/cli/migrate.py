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
CLOSES_WHAT_IT_OPENS = True
"""The run closes its journal and its target before it returns (the target in a thread, from the
last answer on), so `cli.main.lean_exit` may freeze what is left instead of letting shutdown walk
it."""

EXAMPLES = """\
  # plan only: counts per collection, chunks and bytes; touches nothing
  longmem-etl migrate --source local:./a.db --target local:./b.db --dry-run
  # tenant A -> tenant B, cleaned on the way, through a flaky target
  longmem-etl migrate --source local:./a.db --spec longmem_etl/sample_data/specs/migration-hygiene.toml \\
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
  # a target that may be down: give each failing call 5 tries or 2 minutes, then dead-letter
  longmem-etl migrate --source a.json --target local:./b.db --max-attempts 5 --give-up-after 2m
  # a stricter target: refuse texts over 20k chars; --dry-run names the items first
  longmem-etl migrate --source local:./a.db --target 'local:./b.db?max_text_chars=20000' --dry-run

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
        "--max-attempts",
        type=int,
        default=8,
        metavar="N",
        help="retry budget: tries of one call on 5xx/timeouts (and of a chunk on other errors) "
        "before its items are dead-lettered (default 8; 429s are waited out, not counted)",
    )
    p.add_argument(
        "--give-up-after",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="retry budget in time: give a failing call up this long after its first failure, "
        "429 waits included (e.g. 90s, 5m, 1h; default: no time limit)",
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
        max_attempts=args.max_attempts,
        give_up_after=args.give_up_after,
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


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``1.5m``, ``2h``, ``500ms`` -> seconds (argparse type: errors exit 2)."""
    t = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h") if t.endswith(u)), "")
    try:
        value = float(t[: len(t) - len(unit)] if unit else t) * _UNITS.get(unit, 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 5m, 1h)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive duration")
    return value


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
    from longmem_etl.arrays import arrow_without_pandas
    from longmem_etl.cli.main import freeze_imports
    from longmem_etl.migrate import run_migration, stop_on_signals
    from longmem_etl.storage.staging import staged

    arrow_without_pandas()  # this process never uses pandas: not on the way to the first call
    freeze_imports(args)  # run_migration's import above brought the engine and its data stack

    opts = options_from_args(args)
    stop = threading.Event()
    # an s3:// snapshot source is mirrored privately; the run freezes its own copy as usual
    with staged(None, [args.source]) as (_, (source,)), stop_on_signals(stop):
        opts.source = source
        result = run_migration(opts, stop=stop)
    data = result.as_dict()
    if result.interrupted and not result.dry_run:
        print(f"longmem-etl migrate: {result.render()}", file=sys.stderr)
        if args.json:
            emit(args, data, "")
        return result.exit_code
    emit(args, data, result.render())
    return result.exit_code

"""``longmem-etl quickstart``: the whole story on embedded tenants, no key, no network."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_json_flag, add_verb, emit

VERB = "quickstart"
ORDER = 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="start here: seed, back up, query, clean, migrate and verify on local tenants",
        description=(
            "Seeds two embedded tenants from the sample dumps shipped with the package (a healthy "
            "one and a dirty one), backs them up to Parquet snapshots, queries them in DuckDB, "
            "cleans the dirty one with the bundled migration-hygiene.toml spec, migrates the result "
            "to a third tenant through injected faults (latency, 503s, 429s, ambiguous timeouts) and "
            "verifies it exactly. Needs no API key and no network. Re-running starts over in the same --dir."
        ),
        examples="  longmem-etl quickstart\n  longmem-etl quickstart --dir /tmp/lm-demo --json\n",
    )
    p.add_argument(
        "--dir",
        default=".longmem-etl/quickstart",
        help="where to put stores, snapshots and the migration (default: %(default)s)",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from longmem_etl.cli.sql import write_table
    from longmem_etl.quickstart import next_steps, run_quickstart

    quiet = args.json
    result = run_quickstart(
        args.dir,
        show_progress=not quiet,
        say=(lambda _: None) if quiet else print,
        show_table=(lambda _c, _r: None)
        if quiet
        else (lambda c, r: write_table(sys.stdout, c, iter(r))),
    )
    emit(args, result.to_json(), "\n" + next_steps(result))
    return result.exit_code

"""``longmem-etl status JOURNAL``: where a migration stands, and how to resume it."""

from __future__ import annotations

import argparse

from longmem_etl.cli.common import add_json_flag, add_verb, emit

VERB = "status"
ORDER = 71

EXAMPLES = """\
  longmem-etl status .longmem-etl/migrations/3f2a9c0d1e2b4a5c/journal.sqlite
  longmem-etl status .longmem-etl/migrations/3f2a9c0d1e2b4a5c --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="show a migration journal: chunk states, items done, dead letters, resume command",
        description="Read a migration journal (read-only) and show its progress and last errors.",
        examples=EXAMPLES,
    )
    p.add_argument(
        "journal", metavar="JOURNAL", help="journal.sqlite, or the migration's directory"
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl.migrate import migration_status

    st = migration_status(args.journal)
    chunks = ", ".join(f"{k} {v}" for k, v in st["chunks"].items())
    lines = [
        f"migration {st['migration_id']}  ({st['journal']})",
        f"items: {st['items_done']}/{st['items_total']} done, {st['items_dead']} dead-lettered, "
        f"{st['items_pending']} pending",
        f"chunks: {chunks}",
    ]
    if st["last_errors"]:
        lines.append("recent errors (retried or reconciled unless the chunk is failed/dead):")
    for e in st["last_errors"]:
        lines.append(f"  chunk {e['chunk']} ({e['state']}, {e['attempts']} attempts): {e['error']}")
    if "verification" in st:
        v = st["verification"]
        if v.get("error"):
            lines.append(f"verification: NOT DONE — {v['error']}")
        else:
            lines.append(
                f"verification: {'EXACT' if v.get('exact') else 'MISMATCH'} {v.get('totals')}"
            )
    if st["items_pending"] or not st["planned"]:
        lines.append(f"resume with: {st.get('resume_command')}")
    emit(args, st, "\n".join(lines))
    return 0

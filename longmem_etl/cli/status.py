"""``longmem-etl status [JOURNAL]``: where a migration stands, and how to resume it — from anywhere."""

from __future__ import annotations

import argparse
from typing import Any

from longmem_etl.cli.common import add_json_flag, add_verb, emit

VERB = "status"
ORDER = 71

EXAMPLES = """\
  longmem-etl status                      # every migration under $LONGMEM_ETL_HOME
  longmem-etl status ~/.local/state/longmem-etl/migrations/3f2a9c0d1e2b4a5c --json
  longmem-etl status ./journal.sqlite     # a journal given with migrate --journal
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="show migrations: chunk states, items done, dead letters, resume command",
        description=(
            "Read a migration journal (read-only) and show its progress and last errors. "
            "Without JOURNAL, list every migration under the state home ($LONGMEM_ETL_HOME, "
            "default ~/.local/state/longmem-etl), newest first."
        ),
        examples=EXAMPLES,
    )
    p.add_argument(
        "journal",
        nargs="?",
        metavar="JOURNAL",
        help="journal.sqlite, or the migration's directory (default: list all)",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def _render(st: dict[str, Any]) -> list[str]:
    chunks = ", ".join(f"{k} {v}" for k, v in st["chunks"].items())
    lines = [
        f"migration {st['migration_id']}  ({st['journal']})",
        f"items: {st['items_done']}/{st['items_total']} done, {st['items_dead']} dead-lettered, "
        f"{st['items_pending']} pending"
        + (
            ""
            if st.get("planned")
            else " (plan not finished: still being written, or its run stopped before; "
            "the next run plans afresh)"
        ),
        f"chunks: {chunks}",
    ]
    held = (st.get("holdings") or {}).get("already_in_target")
    if held:
        lines.append(f"already in the target from earlier runs: {held}")
    if st.get("changed"):
        lines.append(f"{st['changed']} item(s) in the target differ from the plan's payload")
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
    return lines


def run(args: argparse.Namespace) -> int:
    from longmem_etl.migrate import list_migrations, migration_status, state_home

    if args.journal is None:
        found = list_migrations()
        if not found:
            emit(
                args,
                {"home": str(state_home()), "migrations": []},
                f"no migrations under {state_home()}",
            )
            return 0
        human = "\n\n".join("\n".join(_render(st)) for st in found)
        emit(args, {"home": str(state_home()), "migrations": found}, human)
        return 0
    st = migration_status(args.journal)
    emit(args, st, "\n".join(_render(st)))
    return 0

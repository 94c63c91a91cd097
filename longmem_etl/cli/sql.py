"""``longmem-etl sql "QUERY" --root DIR``: query every snapshot under a root, read-only.

The session is locked down by DuckDB itself (read-only catalog, no file access beyond the snapshot
files, only query statements): see ``longmem_etl.warehouse``. Output streams for csv and json, so a
big result does not have to fit in memory; the table format is for people and shortens long cells.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import unicodedata
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from longmem_etl.cli.common import add_identity_flag, add_verb
from longmem_etl.errors import BadInput

VERB = "sql"
ORDER = 30
BATCH = 10_000
MAX_CELL = 80

EXAMPLES = """\
  longmem-etl sql "SELECT tenant, collection, count(*) AS n FROM latest_memories GROUP BY ALL ORDER BY n DESC" --root snapshots/
  longmem-etl sql "SELECT id, metadata->>'$.src' AS src FROM memories WHERE metadata->>'$.src' IS NOT NULL" --root snapshots/ --format csv > src.csv
  longmem-etl sql "SELECT * FROM snapshots" --root snapshots/ --format json
  longmem-etl sql "DESCRIBE memories" --root snapshots/
  longmem-etl sql "SELECT tenant, count(*) FROM latest_memories GROUP BY ALL" --root s3://my-backups/longmem

views: memories, latest_memories (newest snapshot per tenant), collections, rejected, snapshots;
each has tenant and snapshot columns; metadata/extra/fidelity and collections.raw are JSON.
Statements that write (CREATE, INSERT, COPY, ATTACH, SET, ...) are refused: exit 2. PIVOT works.
With --database FILE the views live in FILE's schema "longmem" (first on the search path); the
file's own tables and views are never replaced (reach a shadowed one as main.NAME).
Ctrl-C stops a running query at once (exit 130).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(
        sub,
        VERB,
        help="query the snapshots under a root with DuckDB SQL (read-only)",
        description="Run a read-only DuckDB SQL query over views of every snapshot under --root.",
        examples=EXAMPLES,
    )
    p.add_argument("query", metavar="QUERY", help="SQL (one or more statements; the last is shown)")
    p.add_argument(
        "--root", required=True, help="folder or s3://BUCKET/PREFIX holding tenant=*/snapshot=*/"
    )
    p.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output: aligned table (default), CSV with a header, or a JSON array of objects",
    )
    p.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        help="same as --format json",
    )
    p.add_argument(
        "--database",
        type=Path,
        help="keep the views in this DuckDB file (created or refreshed), e.g. to open it in "
        "other tools; default: a private temporary catalog",
    )
    add_identity_flag(p)
    p.add_argument(
        "--trust",
        action="store_true",
        help="skip checking each snapshot against its manifest (sizes, Parquet row counts, the "
        "manifest's own checksum) when opening; faster on roots with many snapshots. File names "
        "outside a snapshot are refused even so",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from longmem_etl import warehouse
    from longmem_etl.interrupts import interruptible
    from longmem_etl.storage import is_remote
    from longmem_etl.storage.staging import staged

    if args.database and is_remote(args.root):
        raise BadInput(
            "--database keeps views naming snapshot files, and an s3:// root is read through a "
            "temporary copy: query it without --database"
        )
    with staged(args.root) as (root, _):  # an s3:// root: its snapshots mirrored privately
        if not Path(root).is_dir():
            raise BadInput(f"{args.root}: no such directory")
        con = warehouse.connect(root, database=args.database, read_only=True, trust=args.trust)
        try:
            with interruptible(con):  # Ctrl-C stops a running query at once: exit 130
                _query(con, args)
        finally:
            con.close()
    return 0


def _query(con: Any, args: argparse.Namespace) -> None:
    from longmem_etl import warehouse

    result = warehouse.run_query(con, args.query)
    names = [d[0] for d in result.description or []]
    json_cols = warehouse.json_column_names(result.description)
    rows = _batches(result)
    out: Any = _Remote(sys.stdout)  # the `snapshots` view's paths: s3:// URLs, not the mirror
    if args.format == "csv":
        write_csv(out, names, rows)
    elif args.format == "json":
        write_json(out, names, json_cols, rows)
    else:
        write_table(out, names, rows)
    out.flush()


class _Remote:
    """A text stream writing mirror paths of an ``s3://`` root as the URLs they stand for."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        from longmem_etl.storage.staging import to_remote

        return self._out.write(to_remote(text))

    def flush(self) -> None:
        self._out.flush()


def _batches(result: Any) -> Iterator[tuple]:
    from longmem_etl import warehouse

    if result.description is None:
        return
    while True:
        try:
            chunk = result.fetchmany(BATCH)
        except Exception as exc:  # errors can surface while fetching (e.g. a bad cast)
            import duckdb

            if isinstance(exc, duckdb.Error):
                raise BadInput(f"SQL error: {warehouse.one_line(exc)}") from None
            raise
        if not chunk:
            return
        yield from chunk


# ------------------------------------------------------------------------------------------------
# formats


def plain(value: Any) -> Any:
    """A value as JSON can hold it: timestamps ISO-8601, decimals exact, bytes as hex."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def text(value: Any) -> str:
    """A value as CSV/table text (booleans lower-case like SQL, NULL empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    value = plain(value)
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def write_csv(out: TextIO, names: list[str], rows: Iterator[tuple]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([text(v) for v in row])


def write_json(out: TextIO, names: list[str], json_cols: set[int], rows: Iterator[tuple]) -> None:
    """A JSON array of objects; JSON columns nest as values, not as strings."""
    out.write("[")
    first = True
    for row in rows:
        obj = {}
        for i, (name, value) in enumerate(zip(names, row, strict=True)):
            if i in json_cols and isinstance(value, str):
                obj[name] = json.loads(value)
            else:
                obj[name] = plain(value)
        out.write(("\n" if first else ",\n") + json.dumps(obj, ensure_ascii=False))
        first = False
    out.write("]\n" if first else "\n]\n")


def _cell(value: Any) -> str:
    """Table text: control characters escaped (never sent raw to a terminal), long cells cut."""
    s = "NULL" if value is None else text(value)
    s = "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in s
    )
    return s if len(s) <= MAX_CELL else s[: MAX_CELL - 1] + "…"


def width(s: str) -> int:
    """Terminal columns: wide (CJK, emoji) count 2, combining marks 0."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in s
    )


def _pad(s: str, w: int, right: bool = False) -> str:
    fill = " " * (w - width(s))
    return fill + s if right else s + fill


def write_table(out: TextIO, names: list[str], rows: Iterator[tuple]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        bool(cells) and all(c == "NULL" or c.replace(".", "", 1).lstrip("-").isdigit() for c in col)
        for col in zip(*cells, strict=False)
    ] or [False] * len(names)
    widths = [max([width(n)] + [width(r[i]) for r in cells]) for i, n in enumerate(names)]
    out.write(" | ".join(_pad(n, w) for n, w in zip(names, widths, strict=True)).rstrip() + "\n")
    out.write("-+-".join("-" * w for w in widths) + "\n")
    for r in cells:
        line = " | ".join(_pad(c, w, num) for c, w, num in zip(r, widths, numeric, strict=True))
        out.write(line.rstrip() + "\n")
    out.write(f"({len(cells)} row{'s' if len(cells) != 1 else ''})\n")

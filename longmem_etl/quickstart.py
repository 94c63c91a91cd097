"""The whole story on embedded tenants: seed → back up → query → clean → migrate → verify.

It calls exactly the library functions the verbs call (`local seed`, `backup`, `sql`, `clean`,
`migrate`), so what a newcomer sees here is what they will run by hand next. Everything it makes
lives under one directory, which it owns and recreates on each run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longmem_etl.errors import BadInput

MARKER = ".longmem-etl-quickstart"
MARKER_TEXT = "made by `longmem-etl quickstart`; safe to delete\n"
FAULTS = "latency_ms=5&jitter_ms=5&fail_rate=0.15&ambiguous_rate=0.05&rate_limit_rps=20&seed=7"
"""The faulty target the migration goes through, so retries and reconciliation are on show."""

TOP_COLLECTIONS_SQL = """\
SELECT tenant, collection, count(*) AS memories,
       count(*) FILTER (WHERE pinned) AS pinned,
       round(avg(importance), 2) AS avg_importance
FROM latest_memories GROUP BY ALL ORDER BY tenant, memories DESC"""


@dataclass
class QuickstartResult:
    home: Path
    stores: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    clean: dict[str, Any] = field(default_factory=dict)
    migration: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "home": str(self.home),
            "stores": self.stores,
            "snapshots": self.snapshots,
            "query": self.query,
            "clean": self.clean,
            "migration": self.migration,
            "exit_code": self.exit_code,
        }

    def render(self) -> str:
        """What ``longmem-etl quickstart`` prints last: where things are and what to try next."""
        return next_steps(self)


def _fresh_home(home: Path) -> None:
    """Recreate ``home``, refusing to wipe a directory the quickstart did not make (proof: our
    marker file, a regular file holding exactly our text; or an empty directory)."""
    if home.exists() and not home.is_dir():
        raise BadInput(f"{home}: exists and is not a directory; choose another --dir")
    if home.exists():
        marker = home / MARKER
        ours = marker.is_file() and not marker.is_symlink() and _read(marker) == MARKER_TEXT
        if not ours and any(home.iterdir()):
            raise BadInput(
                f"{home}: exists and was not made by quickstart; choose another --dir or remove it"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text(MARKER_TEXT)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def run_quickstart(
    home: str | Path,
    *,
    show_progress: bool = True,
    say: Callable[[str], None] = lambda _: None,
    show_table: Callable[[list[str], list[tuple]], None] = lambda _cols, _rows: None,
) -> QuickstartResult:
    """Run every step on fresh local tenants under ``home``; ``say`` and ``show_table`` narrate."""
    from longmem_etl.api.local_seed import seed_from_file
    from longmem_etl.backup import backup
    from longmem_etl.migrate import MigrationOptions, run_migration
    from longmem_etl.samples import SAMPLE_TENANTS, sample_file
    from longmem_etl.transforms.run import clean_snapshot
    from longmem_etl.warehouse import connect

    home = Path(home).resolve()
    spec = sample_file("specs/migration-hygiene.toml")
    dumps = {tenant: sample_file(name) for tenant, name in SAMPLE_TENANTS.items()}
    _fresh_home(home)
    result = QuickstartResult(home=home)
    root = home / "snapshots"

    for tenant, dump in dumps.items():
        uri = f"local:{home / 'tenants' / f'{tenant}.sqlite'}"
        seeded = seed_from_file(uri, str(dump), progress=show_progress)
        result.stores[tenant] = uri
        say(f"1. seeded {uri} with {seeded['memories']} memories from {dump.name}")

    for tenant, uri in result.stores.items():
        snap = backup(uri, root, tenant=tenant, progress=show_progress)
        result.snapshots[tenant] = str(snap.path)
        say(f"2. backed up {tenant}: {snap.memories} memories -> {snap.path}")

    con = connect(root)
    try:
        cur = con.execute(TOP_COLLECTIONS_SQL)
        cols = [d[0] for d in cur.description]
        rows = cur.fetchall()
    finally:
        con.close()
    result.query = {"sql": TOP_COLLECTIONS_SQL, "columns": cols, "rows": rows}
    say("3. queried the warehouse (memories per collection, latest snapshot per tenant):")
    show_table(cols, rows)

    cleaned = clean_snapshot(result.snapshots["globex"], spec, home / "clean")
    report = cleaned.to_json()
    result.clean = report
    say(
        f"4. cleaned globex with {spec.name}: {report.get('rows_in')} in, "
        f"{report.get('rows_out')} out, {report.get('rejected')} set aside -> {cleaned.path}"
    )

    target = f"local:{home / 'tenants' / 'globex-copy.sqlite'}?{FAULTS}"
    say(f"5. migrating the cleaned snapshot to {target} (injected faults)...")
    migration = run_migration(
        MigrationOptions(
            source=str(cleaned.path),
            target=target,
            concurrency=4,
            chunk_size=20,
            work_root=str(home / "migrations"),
            show_progress=show_progress,
        )
    )
    result.migration = migration.as_dict()
    result.exit_code = migration.exit_code
    upload = migration.upload
    verification = migration.verification or {}
    say(
        f"   sent {migration.counts.get('items_done')} memories in "
        f"{migration.counts.get('chunks_total', '?')} chunks; 503s retried: {upload.get('transient_errors', 0)}, "
        f"rate-limited: {upload.get('rate_limited', 0)}, ambiguous timeouts reconciled: "
        f"{upload.get('ambiguous', 0)}"
    )
    say(
        "6. verified the target against the source: "
        + ("exact (0 missing, 0 extra, 0 duplicated)" if verification.get("exact") else "NOT exact")
    )
    return result


def next_steps(result: QuickstartResult) -> str:
    root = result.home / "snapshots"
    acme = result.stores.get("acme", "local:PATH")
    return f"""\
everything is under {result.home}
  stores      {result.home / "tenants"}/*.sqlite   (embedded tenants, local:PATH)
  snapshots   {root}
  cleaned     {result.home / "clean"}
  migration   {result.migration.get("work_dir")}   (journal, id_map.parquet, verification.json)

try next:
  longmem-etl sql "SELECT category, count(*) FROM latest_memories GROUP BY ALL" --root {root}
  longmem-etl backup --source {acme} --root {root} --keep 3
  longmem-etl diff {result.snapshots.get("acme", "SNAP_A")} <the new snapshot>
  longmem-etl status {result.migration.get("journal")}
  dagster dev -m pipelines        (the same steps as Dagster assets)"""

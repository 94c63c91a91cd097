"""What a retention recipe costs in storage: snapshots kept in steady state x bytes per snapshot.

Simulates one backup a day at 02:00 UTC for two years, running ``forget`` (the library's
``apply_policy``) after each backup exactly as the Dagster schedule does, and reports how many
snapshots each recipe keeps (steady state = the most at any point in the second year). A snapshot is
a full copy (no deduplication between snapshots), so storage = kept x one snapshot's size; the size
per memory is measured on a real snapshot of a generated 50,000-memory dump (the benchmark
generator's realistic texts and metadata). Not a test: run it by hand.

    python benchmarks/retention_cost.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from longmem_etl.retention import Policy, apply_policy, parse_within
from longmem_etl.snapshots import convert_dump

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "daily for a week: --keep-daily 7": Policy(daily=7),
    "weekly for a month: --keep-weekly 5": Policy(weekly=5),
    "monthly for a year: --keep-monthly 12": Policy(monthly=12),
    "all three: --keep-daily 7 --keep-weekly 5 --keep-monthly 12": Policy(
        daily=7, weekly=5, monthly=12
    ),
    "--keep-last 7 (backup --keep 7)": Policy(last=7),
    "--keep-within 30d": Policy(within=parse_within("30d")),
}


def simulate(policy: Policy, days: int = 730) -> tuple[int, int]:
    """(steady-state max kept in the second year, kept at the end)."""
    start = datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc)
    kept: list[datetime] = []
    most = 0
    for day in range(days):
        kept.append(start + timedelta(days=day))
        keep = apply_policy(kept, policy)
        kept = [kept[i] for i in sorted(keep)]
        if day >= days // 2:
            most = max(most, len(kept))
    return most, len(kept)


def snapshot_bytes_per_memory(count: int = 50_000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "big.json"
        gen = [sys.executable, str(ROOT / "sample_data" / "generate.py"), "big"]
        subprocess.run([*gen, "--count", str(count), "--out", str(dump)], check=True)
        res = convert_dump(dump, Path(tmp) / "root", progress=False)
        path = Path(getattr(res, "path", res))
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        return size / count


def main() -> None:
    per_mem = snapshot_bytes_per_memory()
    print(f"one snapshot: {per_mem:,.0f} bytes per memory (generated dump, Parquet + manifest)")
    print("| recipe | snapshots kept | 100k memories | 1M memories |")
    print("|---|---:|---:|---:|")
    for name, policy in RECIPES.items():
        most, _end = simulate(policy)
        for_100k = most * per_mem * 100_000 / 2**20
        for_1m = most * per_mem * 1_000_000 / 2**30
        print(f"| {name} | {most} | {for_100k:,.0f} MiB | {for_1m:,.1f} GiB |")


if __name__ == "__main__":
    main()

"""Benchmark: ``longmem-etl report`` over one big tenant vs a plain scan of the same snapshot.

Goal: a 1M-memory tenant in <= 10 s with peak memory <= 1 GB on 2 cores. Both measurements run in
their own child process (same interpreter, same imports of DuckDB and the warehouse), timed from
process start, with the child's peak RSS from ``os.wait4``; the ratio is taken within one run
because this machine's speed varies through the day.

- report:   ``build_report`` + ``write_report`` for the tenant (every figure, the diff against the
            previous snapshot, 10 matplotlib charts, the HTML file);
- baseline: the same warehouse connection and ``SELECT count(*), sum(length(text))`` over the
            tenant's newest snapshot (one full scan of the text column).

    python benchmarks/bench_report.py --count 1000000 --work /tmp/bench-report   # generates + converts
    python benchmarks/bench_report.py --root ROOT --tenant T                      # existing snapshots

With ``--count`` the generated dump is converted twice (two snapshots, so the "changes" figure runs
its full diff) and the work dir is reused on the next run when the count matches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

REPORT = """
import sys
from longmem_etl.report import build_report, write_report
r = build_report(sys.argv[1], [sys.argv[2]])
write_report(r, sys.argv[3])
print(r.tenants[0].figures["overview"].rows[0][0])
"""

BASELINE = """
import sys
from longmem_etl.warehouse import connect
con = connect(sys.argv[1])
print(con.execute(
    "SELECT count(*), sum(length(text)) FROM latest_memories WHERE tenant = ?", [sys.argv[2]]
).fetchone()[0])
"""


def measure(code: str, *args: str) -> tuple[float, float, str, float]:
    """(wall s, peak RSS MB, stdout, CPU s) of ``python -c code args`` in a child process (CPU
    time is worth printing on a shared machine: wall time there is mostly waiting for a core)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, cwd=REPO, text=True
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {code.strip().splitlines()[1]}")
    return wall, usage.ru_maxrss / 1024, out.strip(), usage.ru_utime + usage.ru_stime


def prepare(count: int, work: Path) -> tuple[Path, str]:
    root = work / "snaps"
    stamp = work / "count.txt"
    if stamp.is_file() and stamp.read_text() == str(count):
        return root, "bench"
    work.mkdir(parents=True, exist_ok=True)
    dump = work / "dump.jsonl"
    cli = [sys.executable, "-m", "longmem_etl.cli.main"]
    gen = [sys.executable, str(REPO / "sample_data" / "generate.py"), "big", "--count", str(count)]
    subprocess.run([*gen, "--out", str(dump), "--format", "jsonl"], check=True, cwd=REPO)
    for _ in range(2):
        subprocess.run(
            [*cli, "convert", str(dump), "--root", str(root), "--tenant", "bench"],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1.1)  # snapshot names are seconds: two distinct ones
    dump.unlink()
    stamp.write_text(str(count))
    return root, "bench"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", type=Path, help="existing snapshot root")
    p.add_argument("--tenant", help="tenant under --root")
    p.add_argument("--count", type=int, default=200_000, help="memories to generate (no --root)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-report"), help="work dir")
    p.add_argument("--repeat", type=int, default=1, help="runs of each; the best is kept")
    args = p.parse_args()
    if args.root:
        if not args.tenant:
            p.error("--root needs --tenant")
        root, tenant = args.root, args.tenant
    else:
        root, tenant = prepare(args.count, args.work)
    out = (args.work if not args.root else Path("/tmp")) / "bench-report.html"
    runs = {"baseline": [], "report": []}
    for _ in range(args.repeat):
        runs["baseline"].append(measure(BASELINE, str(root), tenant))
        runs["report"].append(measure(REPORT, str(root), tenant, str(out)))
    best = {k: min(v, key=lambda r: r[0]) for k, v in runs.items()}
    n = int(best["report"][2])
    assert n == int(best["baseline"][2]), "report and baseline disagree on the memory count"
    result = {
        "memories": n,
        "cpus": os.cpu_count(),
        "report_s": round(best["report"][0], 2),
        "report_peak_rss_mb": round(best["report"][1]),
        "report_cpu_s": round(best["report"][3], 2),
        "baseline_s": round(best["baseline"][0], 2),
        "baseline_cpu_s": round(best["baseline"][3], 2),
        "baseline_peak_rss_mb": round(best["baseline"][1]),
        "time_ratio": round(best["report"][0] / best["baseline"][0], 2),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "html_bytes": out.stat().st_size,
        "goal": "report <= 10 s and <= 1024 MB at 1M memories",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The whole `migrate` command, this tree against an older commit, runs interleaved (not a test).

    .venv/bin/python benchmarks/ab_migrate.py --base REV [--items 20000] [--rounds 3]

On a shared machine the load moves between two invocations of `bench_migrate_e2e.py`, so a
before/after taken minutes apart says little. This runs the same command (the e2e benchmark's
held-out-like dump, ``latency_ms=200``, ``--concurrency 8``, chunk 100; with and without
``fail_rate=0.1&ambiguous_rate=0.02&seed=S`` for each of ``--seeds``, default 1) alternately with the code of ``REV`` (``git
archive`` into a temp dir, put first on ``PYTHONPATH``) and with this tree, ``--rounds`` times,
and prints each run and the medians: wall, upload phase, % of ideal, exact, load average. With
several seeds the faults rows are also summed up over all seeds (``s*``): issue 15 judges the
faults goal on the median of seeds 1-5.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_migrate_e2e import _exact_but_refused, make_dump, run_migrate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _checkout(rev: str, into: Path) -> Path:
    """``rev``'s ``longmem_etl`` package, extracted (no git worktree is created)."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "longmem_etl"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1], help="the faults' seeds")
    ap.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="let every process compile its modules (see bench_migrate_e2e.py)",
    )
    args = ap.parse_args()
    per_s = args.concurrency * args.chunk / (args.latency_ms / 1000)
    queries = [("no", f"latency_ms={args.latency_ms}")]
    if not args.no_faults:
        for seed in args.seeds:
            queries.append(
                (
                    "yes" if args.seeds == [1] else f"s{seed}",
                    f"latency_ms={args.latency_ms}&fail_rate=0.1&ambiguous_rate=0.02&seed={seed}",
                )
            )
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as d:
        tmp = Path(d)
        base = _checkout(args.base, tmp / "base")
        dump = tmp / "dump.json"
        make_dump(dump, args.items, refused=max(1, round(args.items * 77 / 200_000)))
        old_path = os.environ.get("PYTHONPATH")
        k = 0
        for r in range(args.rounds):
            for faults, query in queries:
                for label, path in (("base", str(base)), ("this", None)):
                    if path:
                        os.environ["PYTHONPATH"] = path
                    elif old_path is None:
                        os.environ.pop("PYTHONPATH", None)
                    else:
                        os.environ["PYTHONPATH"] = old_path
                    k += 1
                    res = run_migrate(tmp, f"run{k}", dump, query, args)
                    row = {
                        "wall": res["_wall"],
                        "upload": res.get("timings", {}).get("upload", 0.0),
                        "calls": res.get("upload", {}).get("calls", 0),
                        "exact": _exact_but_refused(
                            res.get("verification") or {}, res.get("dead_letters", 0)
                        ),
                        "load": os.getloadavg()[0],
                    }
                    results.setdefault((faults, label), []).append(row)
                    if faults.startswith("s") and len(args.seeds) > 1:
                        results.setdefault(("s*", label), []).append(row)
                    print(
                        f"round {r + 1} faults {faults:<3} {label:<4} wall {row['wall']:6.2f} s "
                        f"upload {row['upload']:5.2f} s calls {row['calls']:4} "
                        f"exact {row['exact']} load {row['load']:.1f}",
                        flush=True,
                    )
    ideal = args.items / per_s
    print(
        f"\n{args.items} memories, ideal {ideal:.2f} s; medians of {args.rounds} interleaved runs"
    )
    print(f"{'faults':>6} {'code':<5} {'wall s':>7} {'% ideal':>8} {'upload s':>9} {'exact':>6}")
    for (faults, label), rows in sorted(results.items()):
        wall = statistics.median(r["wall"] for r in rows)
        upload = statistics.median(r["upload"] for r in rows)
        exact = all(r["exact"] for r in rows)
        print(
            f"{faults:>6} {label:<5} {wall:7.2f} {100 * ideal / wall:7.1f}% {upload:9.2f} "
            f"{str(exact):>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

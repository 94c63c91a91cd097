"""The WHOLE `migrate` command, end to end, on held-out-like data (not a test; prints a table).

    .venv/bin/python benchmarks/bench_migrate_e2e.py [--items 20000 200000] [--latency-ms 200]
        [--repeat 3] [--no-faults] [--sequential]

What a user waits for: `longmem-etl migrate --source dump.json --target local:...?latency_ms=200
--concurrency 8 --chunk-size 100 --json` run as a real process, timed from start to exit, with its
peak RSS (``RUSAGE_CHILDREN``). The dump looks like a real account, not like the upload benchmark's
uniform rows: rare very long texts (a few above the target's text limit, so it refuses them), odd
metadata (nested, unicode, big integers, strings, lists, null), exact duplicate copies of memories
under new ids, uneven collections and container tags.

Ideal = items / (concurrency x chunk / latency) seconds: what perfectly overlapped calls of full
chunks would take. Columns: each phase from the command's own ``timings`` (start = interpreter,
imports and binding; 1st call = everything before the first chunk is queued; then, overlapped
with the upload, the freeze (convert the dump) and the plan with its rate in items/s; upload =
from the first chunk to the last call's answer; verify; outputs), end-to-end ratio to ideal and
its goal, calls vs chunks, bisections, peak RSS, exact. The machine's load average is printed
before and after: on shared cores every phase stretches, so compare ratios taken in one
invocation.
Goals: 20k >= 80 % (the median of ``--repeat`` runs, 3 by default, each printed: one run moves by
+-0.15 s on a shared machine, 2-3 % of the ideal), 200k >= 85 % (one run), with
``fail_rate=0.1&ambiguous_rate=0.02`` >= 70 % and exact (the median over ``--fault-seeds``: each
seed fixes where the failures fall; the worst is printed); peak RSS at 200k <= 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT_LIMIT = 100_000  # the embedded store's MAX_TEXT_CHARS: longer texts are refused (422)
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]
COLLECTIONS = ["notes", "crm", "support", "research", "journal"]


def odd_metadata(rng: random.Random, i: int) -> object:
    r = rng.random()
    if r < 0.55:
        return {"n": i, "tags": [rng.choice(WORDS) for _ in range(3)]}
    if r < 0.65:
        return {"deep": {"a": {"b": {"c": [1, {"d": "é ✓ 日本"}]}}}, "big": 2**70 + i}
    if r < 0.72:
        return None
    if r < 0.78:
        return "free text metadata"
    if r < 0.82:
        return [1, 2, "three"]
    if r < 0.88:
        return {"float": 0.1 + i * 1e-9, "neg": -i, "empty": {}, "nil": None}
    return {}


def make_dump(path: Path, n: int, *, refused: int, seed: int = 11) -> dict:
    """Write a held-out-like dump of ``n`` memories; ``refused`` of them exceed the text limit."""
    rng = random.Random(seed)
    n_dups = max(1, n // 200)  # 0.5 % exact copies of an earlier memory, under a new id
    n_long = max(2, n // 2000)  # rare long (but accepted) texts
    originals = n - n_dups
    refused_at = set(rng.sample(range(originals), refused))
    long_at = set(rng.sample(range(originals), n_long)) - refused_at
    mems: list[dict] = []
    for i in range(originals):
        if i in refused_at:
            text = "x" * (TEXT_LIMIT + 1 + rng.randrange(5000))
        elif i in long_at:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2000, 12000)))
        else:
            text = f"memory {i}: " + " ".join(
                rng.choice(WORDS) for _ in range(rng.randrange(4, 40))
            )
        m = {
            "id": f"m-{i:07d}",
            "collection": COLLECTIONS[min(int(rng.expovariate(1.2)), 4)],
            "text": text,
            "importance": round(rng.random(), 3),
            "category": rng.choice(["fact", "preference", "event"]),
            "metadata": odd_metadata(rng, i),
            "source": "bench",
            "container_tag": None if rng.random() < 0.1 else f"user-{int(rng.paretovariate(1.1))}",
            "created_at": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
        }
        mems.append(m)
    for j in range(n_dups):
        m = dict(mems[rng.randrange(len(mems))])
        m["id"] = f"dup-{j:07d}"
        mems.insert(rng.randrange(len(mems)), m)
    path.write_text(
        json.dumps(
            {
                "format_version": 1,
                "tenant": "held-out",
                "collections": COLLECTIONS,
                "memories": mems,
            }
        )
    )
    return {"items": n, "refused": refused, "duplicates": n_dups, "long": len(long_at)}


def run_migrate(
    tmp: Path, name: str, dump: Path, query: str, args, extra_env: dict | None = None
) -> dict:
    """One `migrate` process: wall time, peak RSS, its --json result."""
    env = {
        **os.environ,
        **child_env(tmp, args),
        **(extra_env or {}),
        "LONGMEM_ETL_HOME": str(tmp / f"home-{name}"),
    }
    cmd = [
        sys.executable,
        "-c",
        "import sys; from longmem_etl.cli.main import main; sys.exit(main())",
        "migrate",
        "--source",
        str(dump),
        "--target",
        f"local:{tmp / (name + '.db')}?{query}",
        "--concurrency",
        str(args.concurrency),
        "--chunk-size",
        str(args.chunk),
        "--json",
    ]
    out_path, err_path = tmp / f"{name}.out", tmp / f"{name}.err"
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, cwd=tmp)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        raise SystemExit(f"migrate exited {code}: {err_path.read_text()[-2000:]}")
    out = json.loads(out_path.read_text())
    out["_wall"] = wall
    out["_rss_mb"] = usage.ru_maxrss / 1024
    return out


def child_env(tmp: Path, args) -> dict[str, str]:
    """An installed package has its bytecode compiled (pip does it); a checkout run with
    ``PYTHONDONTWRITEBYTECODE`` compiles every module in every process. Unless
    ``--no-bytecode-cache``, the children share a bytecode cache under ``tmp`` (filled once by
    `warm_bytecode`), so ``start`` is what a user's install pays."""
    if args.no_bytecode_cache:
        return {}
    return {"PYTHONPYCACHEPREFIX": str(tmp / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}


def warm_bytecode(tmp: Path, args) -> None:
    """Compile, once, what a migrate process imports (into the children's bytecode cache): a
    small migration through the same code paths (faults included)."""
    if args.no_bytecode_cache:
        return
    dump = tmp / "warm.json"
    make_dump(dump, 300, refused=1)
    query = "latency_ms=1&fail_rate=0.1&ambiguous_rate=0.02&seed=1"
    run_migrate(tmp, "warm", dump, query, args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--no-faults", action="store_true", help="skip the fault-injected rows")
    ap.add_argument(
        "--fault-seeds",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5],
        help="one fault-injected run per seed (the injector's fates are fixed per call index, so "
        "one seed is one draw of where the failures fall: a run of them among the last calls "
        "stretches the tail however well the uploader schedules); the goal is judged on the "
        "median, the worst is printed beside it",
    )
    ap.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="let every process compile its modules (PYTHONDONTWRITEBYTECODE as in this "
        "checkout's environment) instead of sharing compiled bytecode as an install does",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each size below 100k without faults (each is printed; the goal is judged "
        "on their median, as the faults goal is on its seeds': one run on a shared machine "
        "moves by +-0.15 s, 2-3 %% of the ideal at 20k); 100k and more run once",
    )
    ap.add_argument(
        "--sequential",
        action="store_true",
        help="also run the first size with the freeze done before the upload "
        "(LONGMEM_ETL_OVERLAP_FREEZE=0), to compare in the same invocation",
    )
    args = ap.parse_args()
    per_s = args.concurrency * args.chunk / (args.latency_ms / 1000)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as d:
        tmp = Path(d)
        warm_bytecode(tmp, args)
        runs = [
            (n, f"latency_ms={args.latency_ms}", 0.80 if n < 100_000 else 0.85, {})
            for n in args.items
            for _ in range(max(1, args.repeat) if n < 100_000 else 1)
        ]
        if not args.no_faults:
            runs.extend(
                (
                    args.items[0],
                    f"latency_ms={args.latency_ms}&fail_rate=0.1&ambiguous_rate=0.02&seed={seed}",
                    0.70,
                    {},
                )
                for seed in args.fault_seeds
            )
        if args.sequential:  # same data and target as the first row, the freeze not overlapped
            runs.insert(
                1, (args.items[0], runs[0][1], runs[0][2], {"LONGMEM_ETL_OVERLAP_FREEZE": "0"})
            )
        dumps: dict[int, tuple[Path, dict]] = {}
        for k, (n, query, goal, extra_env) in enumerate(runs):
            if n not in dumps:
                path = tmp / f"dump-{n}.json"
                dumps[n] = (path, make_dump(path, n, refused=max(1, round(n * 77 / 200_000))))
            dump, shape = dumps[n]
            res = run_migrate(tmp, f"run{k}", dump, query, args, extra_env)
            t = res.get("timings", {})
            up = res.get("upload", {})
            ver = res.get("verification") or {}
            ideal = n / per_s
            ratio = ideal / res["_wall"]
            chunks = (res.get("counts") or {}).get("chunks_total", 0)
            rows.append(
                {
                    "n": n,
                    "faults": "fail" in query,
                    "seed": query.rsplit("seed=", 1)[1] if "seed=" in query else "",
                    "sequential": bool(extra_env),
                    "shape": shape,
                    "wall": res["_wall"],
                    "ideal": ideal,
                    "ratio": ratio,
                    "goal": goal,
                    # everything before the first call (freeze, holdings; the plan too when not
                    # streamed), then the streamed plan, which runs during the upload
                    "freeze_plan": t.get("freeze_plan", 0.0),
                    "freeze": t.get("freeze", 0.0),  # overlapped with the upload (dump sources)
                    "plan_overlapped": t.get("plan_overlapped", 0.0),
                    "upload": t.get("upload", 0.0),
                    "verify": t.get("verify", t.get("verify_outputs", 0.0)),
                    "outputs": t.get("outputs", 0.0),
                    "startup": res["_wall"]
                    - sum(t.get(k, 0.0) for k in ("freeze_plan", "upload", "verify_outputs")),
                    "calls": up.get("calls", 0),
                    "chunks": chunks,
                    "bisections": up.get("bisections", 0),
                    "dead": res.get("dead_letters", 0),
                    "rss": res["_rss_mb"],
                    # exact apart from the items the target refuses (they are dead letters)
                    "exact": _exact_but_refused(ver, res.get("dead_letters", 0)),
                }
            )
    hdr = (
        f"{'memories':>9} {'faults':>6} {'wall s':>7} {'ideal s':>7} {'% ideal':>8} {'goal':>5} "
        f"{'start s':>7} {'1st call s':>10} {'(freeze) s':>10} {'(plan) s':>8} {'plan/s':>7} "
        f"{'upload s':>8} {'verify s':>8} {'outputs s':>9} {'calls/chunks':>13} {'bisect':>6} "
        f"{'dead':>5} {'RSS MB':>7} {'exact':>5}"
    )
    print(
        f"latency {args.latency_ms} ms, concurrency {args.concurrency}, chunk {args.chunk}: "
        f"ideal {per_s:.0f} items/s; load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs; bytecode "
        f"{'compiled by every process' if args.no_bytecode_cache else 'cached, as installed'}"
    )
    print(hdr)
    ok = True
    for r in rows:
        met = r["ratio"] >= r["goal"] and r["exact"]
        # the sequential row is a comparison; fault rows and the runs of one size are judged
        # together, on their median (below)
        ok &= met or r["sequential"] or r["faults"] or r["n"] < 100_000
        rate = r["n"] / r["plan_overlapped"] if r["plan_overlapped"] else 0.0
        kind = f"s{r['seed']}" if r["faults"] else "no/seq" if r["sequential"] else "no"
        print(
            f"{r['n']:>9} {kind:>6} {r['wall']:>7.1f} {r['ideal']:>7.1f} "
            f"{100 * r['ratio']:>7.1f}% {('met' if met else 'NO'):>5} {r['startup']:>7.2f} "
            f"{r['startup'] + r['freeze_plan']:>10.2f} {r['freeze']:>10.2f} "
            f"{r['plan_overlapped']:>8.2f} {rate:>7.0f} {r['upload']:>8.2f} "
            f"{r['verify']:>8.2f} {r['outputs']:>9.2f} {r['calls']:>6}/{r['chunks']:<6} "
            f"{r['bisections']:>6} {r['dead']:>5} {r['rss']:>7.0f} {str(r['exact']):>5}"
        )
    print(
        "goals: whole command >= 80 % of ideal at 20k, >= 85 % at 200k, >= 70 % with faults "
        "(and exact); peak RSS at 200k <= 500 MB"
    )
    for n in sorted({r["n"] for r in rows if r["n"] < 100_000}):
        runs_n = [r for r in rows if r["n"] == n and not r["faults"] and not r["sequential"]]
        if not runs_n:
            continue
        mid = statistics.median([r["ratio"] for r in runs_n])
        exact = all(r["exact"] for r in runs_n)
        met = mid >= runs_n[0]["goal"] and exact
        each = ", ".join(f"{100 * r['ratio']:.1f}" for r in runs_n)
        print(
            f"{n} without faults, {len(runs_n)} runs: median {100 * mid:.1f} % of ideal "
            f"({each}), "
            f"{'all exact' if exact else 'NOT EXACT'} ({'met' if met else 'NO'})"
        )
        ok &= met
    faulty = [r for r in rows if r["faults"]]
    if faulty:
        ratios = sorted(r["ratio"] for r in faulty)
        median = statistics.median(ratios)
        exact = all(r["exact"] for r in faulty)
        met = median >= faulty[0]["goal"] and exact
        print(
            f"with faults, {len(faulty)} seeds: median {100 * median:.1f} % of ideal, worst "
            f"{100 * ratios[0]:.1f} %, best {100 * ratios[-1]:.1f} %, "
            f"{'all exact' if exact else 'NOT EXACT'} ({'met' if met else 'NO'})"
        )
        ok &= met
    big = [r for r in rows if r["n"] >= 200_000]
    if big:
        rss_ok = all(r["rss"] <= 500 for r in big)
        print(
            f"peak RSS at 200k: {max(r['rss'] for r in big):.0f} MB ({'met' if rss_ok else 'NO'})"
        )
        ok &= rss_ok
    print("PASS" if ok else "BELOW TARGET")
    return 0 if ok else 1


def _exact_but_refused(ver: dict, dead: int) -> bool:
    """Exact apart from the items the target refused: those (and only those) are missing, as dead
    letters; nothing duplicated, nothing extra."""
    t = ver.get("totals") or {}
    return t.get("missing", -1) == dead and not t.get("duplicated") and not t.get("extra")


if __name__ == "__main__":
    sys.exit(main())

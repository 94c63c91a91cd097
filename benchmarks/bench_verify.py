"""Verification + outputs of a migration alone, against the bare target read (not a test; prints a table).

    .venv/bin/python benchmarks/bench_verify.py [--items 20000 200000] [--latency-ms 200]

Setup (untimed): the held-out-like dump of `bench_migrate_e2e.py` is migrated once into a local
target with ``latency_ms=0`` — a real `migrate` process, whose RSS is sampled every 20 ms and split
by phase (start, freeze + holdings, upload with the streamed plan, verify, outputs) from the
command's own ``timings``: which phase owns the process's peak.

Then, each in its own fresh process against the same target with ``latency_ms`` (default 200, as
the end-to-end benchmark) and the migration's journal:

- ``read``     the baseline: the same pages of the target (`targetread.target_pages`), dropped;
- ``keys``     `targetread.read_target_keys` (the read + markers and fingerprints as Arrow keys);
- ``verify``   `verifying.verify_journal` + `write_outputs` from nothing (the preparation made on
               the spot, in a thread, while the target is read);
- ``prepared`` what `migrate` does after the upload's last answer: the same with the
               `verifyprep.PreparedVerification` that `migrate` makes while its calls are out
               (made and waited for before the clock starts; its own seconds are in the steps).

Each row: seconds after imports, CPU seconds (steadier than wall on shared cores), items/s, peak
RSS of that process and its RSS after imports, and the ratio to ``read`` in the same invocation.
With ``--before DIR`` the verify phase of an earlier checkout runs too (``before``), alternating
with this code's, so both see the same load. Goal: ``prepared`` (what a user of `migrate` waits
for) >= 100,000 items/s at 200k.
The machine's load average is printed beside every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

GOAL = 100_000  # items/s for verification + outputs


def _status_mb(field: str, pid: int | str = "self") -> float:
    """``VmRSS``/``VmHWM`` of a process in MB. Not ``ru_maxrss``: a child started by ``subprocess``
    (vfork + exec) inherits its parent's high-water mark there, so a parent that built a big dump
    would be counted as the child's peak. ``VmHWM`` belongs to the child's own address space."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def phase(name: str, target: str, journal: str, work: str) -> None:
    """Child process: run one phase, print ``{"seconds", "rss0", "items"}`` as JSON."""
    from longmem_etl.migrate import source as sources
    from longmem_etl.migrate.journal import Journal
    from longmem_etl.migrate.targetread import read_target_keys

    try:
        from longmem_etl.migrate.targetread import target_pages
    except ImportError:  # older code (--before): its private name
        from longmem_etl.migrate.targetread import _pages as target_pages
    import longmem_etl
    from longmem_etl.migrate.verifying import verify_journal, write_outputs

    api = sources.open_target(target, key_env="LONGMEM_API_KEY", create=False)
    rss0 = _status_mb("VmRSS")
    t0 = time.perf_counter()
    c0 = time.process_time()
    items = 0
    steps: dict[str, float] = {}
    if name == "read":
        for page in target_pages(api, None, 30, None, None):
            items += page.num_rows
    elif name == "keys":
        items = read_target_keys(api).num_rows
    elif name in ("verify", "prepared"):
        j = Journal(journal)
        key = j.get("binding")["source"]["key"]
        prep = None
        if name == "prepared":  # as `migrate` does: made while the upload's calls are out
            from longmem_etl.migrate.verifyprep import PreparedVerification

            prep = PreparedVerification(journal)
            prep.fixed_columns()
            t0 = time.perf_counter()  # the user waits from here: after the last answer
            c0 = time.process_time()
        report = verify_journal(j, api, migration_id=key, **({"prepared": prep} if prep else {}))
        t1 = time.perf_counter()
        write_outputs(j, Path(work), report.as_dict(), id_map=report.id_map)
        items = report.totals["source"]
        steps = {**getattr(report, "timings", {}), "outputs": time.perf_counter() - t1}
        j.close()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    peak = _status_mb("VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "rss0": rss0,
                "peak": peak,
                "items": items,
                "steps": steps,
                "code": str(Path(longmem_etl.__file__).parent.parent),
            }
        )
    )


def sample_rss(pid: int, out: list[tuple[float, float, float]], done: threading.Event) -> None:
    """(seconds since start, VmRSS MB, VmHWM MB) of ``pid`` every 20 ms until it exits."""
    t0 = time.perf_counter()
    while not done.is_set():
        try:
            rss, hwm = _status_mb("VmRSS", pid), _status_mb("VmHWM", pid)
        except (OSError, ValueError):
            return
        out.append((time.perf_counter() - t0, rss, hwm))
        time.sleep(0.02)


def setup(tmp: Path, n: int, latency_ms: int = 0) -> tuple[str, str, str, dict]:
    """Dump + one `migrate` (at ``latency_ms``): (db path, journal, work dir, RSS by phase)."""
    from bench_migrate_e2e import make_dump

    dump = tmp / f"dump-{n}.json"
    make_dump(dump, n, refused=max(1, round(n * 77 / 200_000)))
    db = tmp / f"target-{n}.db"
    env = {**os.environ, "LONGMEM_ETL_HOME": str(tmp / f"home-{n}")}
    cmd = [
        sys.executable,
        "-c",
        "import sys; from longmem_etl.cli.main import main; sys.exit(main())",
        "migrate",
        "--source",
        str(dump),
        "--target",
        f"local:{db}?latency_ms={latency_ms}",
        "--concurrency",
        "8",
        "--chunk-size",
        "100",
        "--json",
    ]
    samples: list[tuple[float, float, float]] = []
    done = threading.Event()
    with open(tmp / "setup.out", "w") as out_f, open(tmp / "setup.err", "w") as err_f:
        proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, cwd=tmp)
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, samples, done))
        sampler.start()
        t0 = time.perf_counter()
        _, status, _usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
    if os.waitstatus_to_exitcode(status) not in (0, 3):
        raise SystemExit((tmp / "setup.err").read_text()[-2000:])
    res = json.loads((tmp / "setup.out").read_text())
    t = res.get("timings", {})
    steps = [
        ("freeze", t.get("freeze_plan", 0.0)),
        ("upload", t.get("upload", 0.0)),
        ("verify", t.get("verify", 0.0)),
        ("outputs", t.get("outputs", 0.0)),
    ]
    start = wall - sum(s for _, s in steps)
    bounds, at = [("start", 0.0, start)], start
    for name, secs in steps:
        bounds.append((name, at, at + secs))
        at += secs
    by_phase = {
        name: max((r for s, r, _ in samples if lo <= s < hi), default=0.0)
        for name, lo, hi in bounds
    }
    by_phase["peak"] = max((h for _, _, h in samples), default=0.0)
    by_phase["wall"] = wall
    by_phase["samples"] = samples
    journal = res["journal"]
    return str(db), journal, str(Path(journal).parent), by_phase


def run_phase(name: str, target: str, journal: str, work: str, code: str | None = None) -> dict:
    """One phase in a fresh process (``code``: a checkout of other code to run it with)."""
    env = dict(os.environ)
    if code:
        env["LONGMEM_BENCH_CODE"] = code
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, target, journal, work],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if out.returncode:
        raise SystemExit(f"{name}: {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["load"] = os.getloadavg()[0]
    return res


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        code = os.environ.get("LONGMEM_BENCH_CODE")
        if code:  # that checkout's longmem_etl, not the (editable) installed one
            sys.meta_path[:] = [
                f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")
            ]
            sys.path.insert(0, code)
        phase(*sys.argv[2:6])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each phase (best is shown)")
    ap.add_argument(
        "--before",
        metavar="DIR",
        help="a checkout of earlier code (e.g. `git archive REV | tar -x -C DIR`): its verify "
        "phase runs too, alternating with this one, on the same target and journal",
    )
    args = ap.parse_args()
    ok = True
    print(f"{os.cpu_count()} CPUs; target latency_ms={args.latency_ms}")
    for n in args.items:
        with tempfile.TemporaryDirectory(prefix="bench-verify-") as d:
            tmp = Path(d)
            load = os.getloadavg()[0]
            db, journal, work, rss = setup(tmp, n)
            print(
                f"\n{n} memories — setup migrate (latency 0, load {load:.1f}): "
                f"{rss['wall']:.1f} s, peak RSS {rss['peak']:.0f} MB; RSS peak by phase (MB): "
                + ", ".join(
                    f"{k} {v:.0f}" for k, v in rss.items() if k not in ("peak", "wall", "samples")
                )
            )
            target = f"local:{db}?latency_ms={args.latency_ms}"
            results: dict[str, dict] = {}
            names = ["read", "keys", "verify", "prepared"] + (["before"] if args.before else [])
            runs: dict[str, list[dict]] = {name: [] for name in names}
            for _ in range(args.repeat):  # alternating, so a burst of load hits all alike
                for name in names:
                    code = args.before if name == "before" else None
                    phase_name = "verify" if name == "before" else name
                    runs[name].append(run_phase(phase_name, target, journal, work, code))
            for name in names:
                results[name] = min(runs[name], key=lambda r: r["seconds"])
            base = results["read"]["seconds"]
            print(
                f"{'phase':>8} {'seconds':>8} {'CPU s':>6} {'items/s':>9} {'x read':>7} "
                f"{'RSS MB':>7} {'(imports)':>9} {'load':>5}"
            )
            for name, r in results.items():
                rate = r["items"] / r["seconds"]
                print(
                    f"{name:>8} {r['seconds']:>8.2f} {r['cpu']:>6.2f} {rate:>9.0f} "
                    f"{r['seconds'] / base:>7.2f} {r['peak']:>7.0f} {r['rss0']:>9.0f} "
                    f"{r['load']:>5.1f}"
                )
            if "before" in results:
                b = results["before"]
                for name in ("verify", "prepared"):
                    v = results[name]
                    print(
                        f"{name} vs before ({b['code']}): {b['seconds'] / v['seconds']:.2f}x "
                        f"faster, CPU {b['cpu']:.2f} -> {v['cpu']:.2f} s, peak RSS "
                        f"{b['peak']:.0f} -> {v['peak']:.0f} MB"
                    )
            v = results["prepared"]
            print(
                "prepared steps (s; the journal is read while the target is): "
                + ", ".join(f"{k} {x:.2f}" for k, x in v["steps"].items())
            )
            met = v["items"] / v["seconds"] >= GOAL
            ok &= met or n < 100_000
            print(
                f"verify + outputs: {v['items'] / v['seconds']:.0f} items/s (goal {GOAL:,}): "
                + ("met" if met else "NOT met")
            )
    print("PASS" if ok else "BELOW TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

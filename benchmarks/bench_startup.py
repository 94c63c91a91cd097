"""The `migrate` command's fixed costs at start and at exit, this tree against an older revision,
runs interleaved (not a test; prints a table).

    .venv/bin/python benchmarks/bench_startup.py [--base main] [--items 20000] [--rounds 5]

Each run is the whole command as a real process (the e2e benchmark's held-out-like dump, a new
``local:`` target with ``latency_ms=200``, ``--concurrency 8 --chunk-size 100 --json``), started
through ``tests/startup_child.py``, which stamps the first ``add_many`` call and the moment
``main`` returned without changing the package. Columns:

- ``1st call``: process start (``Popen``) to the first call: interpreter, imports, binding, the
  first batch of the freeze and its durable plan rows;
- ``exit``: the verb's ``run`` returned to the process gone (what ``main`` does on the way out,
  the lean exit's ``gc.collect()`` included, and interpreter shutdown);
- ``wall``: the whole command;
- the modules of note already imported at the first call (``duckdb``, ``tqdm``).

``--base REV`` is extracted with ``git archive`` and put first on ``PYTHONPATH`` (as
``ab_migrate.py`` does); a first round of each is run and dropped (it fills the shared bytecode
cache, as an install would have). The machine is shared: compare the medians and the ratio taken
in one invocation, and note the load average printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_migrate import _checkout  # noqa: E402
from bench_migrate_e2e import _exact_but_refused, make_dump  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "tests" / "startup_child.py"
OF_NOTE = ("duckdb", "tqdm", "pandas")


def run_once(tmp: Path, name: str, dump: Path, code: Path | None, args) -> dict:
    """One `migrate` process with ``code`` (None: this tree) first on the path: its stamps."""
    env = {
        **os.environ,
        "LONGMEM_ETL_HOME": str(tmp / f"home-{name}"),
        "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
        "PYTHONDONTWRITEBYTECODE": "",
    }
    if code is not None:
        env["PYTHONPATH"] = str(code)
    else:
        env.pop("PYTHONPATH", None)
    stamps = tmp / f"{name}.stamps.json"
    cmd = [
        sys.executable,
        str(CHILD),
        str(stamps),
        "migrate",
        "--source",
        str(dump),
        "--target",
        f"local:{tmp / (name + '.db')}?latency_ms={args.latency_ms}",
        "--concurrency",
        "8",
        "--chunk-size",
        "100",
        "--json",
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
    end = time.time()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"migrate exited {proc.returncode}: {proc.stderr[-2000:]}")
    rec = json.loads(stamps.read_text())
    out = json.loads(proc.stdout)
    return {
        "first_call": rec["first_call"] - t0,
        "exit": end - rec["verb_returned"],
        "wall": end - t0,
        "of_note": sorted({m.split(".")[0] for m in rec["modules"]} & set(OF_NOTE)),
        "exit_code": proc.returncode,
        "exact": _exact_but_refused(out.get("verification") or {}, out.get("dead_letters", 0)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main", help="git revision to compare against")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--latency-ms", type=int, default=200)
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"base": [], "this": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as d:
        tmp = Path(d)
        base = _checkout(args.base, tmp / "base")
        dump = tmp / "dump.json"
        make_dump(dump, args.items, refused=max(1, round(args.items * 77 / 200_000)))
        k = 0
        for r in range(args.rounds + 1):
            for label, code in (("base", base), ("this", None)):
                k += 1
                row = run_once(tmp, f"run{k}", dump, code, args)
                if r == 0:
                    continue  # the bytecode cache's fill
                rows[label].append(row)
                print(
                    f"round {r} {label:<4} 1st call {row['first_call']:.3f} s exit "
                    f"{row['exit']:.3f} s wall {row['wall']:.2f} s exact {row['exact']} "
                    f"imported at 1st call: {', '.join(row['of_note']) or '-'} "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    med = {
        label: {k: statistics.median(r[k] for r in rs) for k in ("first_call", "exit", "wall")}
        for label, rs in rows.items()
    }
    print(
        f"\n{args.items} memories, latency {args.latency_ms} ms; medians of {args.rounds} "
        f"interleaved runs; base = {args.base}; load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs"
    )
    print(f"{'':>10} {'1st call s':>10} {'exit s':>8} {'wall s':>8}")
    for label in ("base", "this"):
        m = med[label]
        print(f"{label:>10} {m['first_call']:10.3f} {m['exit']:8.3f} {m['wall']:8.2f}")
    ratio = {k: med["this"][k] / med["base"][k] for k in ("first_call", "exit", "wall")}
    print(
        f"{'this/base':>10} {ratio['first_call']:10.2f} {ratio['exit']:8.2f} {ratio['wall']:8.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

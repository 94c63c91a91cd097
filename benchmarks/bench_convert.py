"""Benchmark: dump -> Parquet, ``convert`` vs the naive baseline, wall time and peak RSS.

Not a test. One invocation generates (or reuses) a dump of N memories with
``sample_data/generate.py big`` and runs, each in its own child process (so peak RSS is that run's
alone, from ``wait4``'s ``ru_maxrss``, which covers the child's reaped descendants only as a max;
and, so that a run using helper processes that map the same file is measured whole and honestly,
the peak PSS of the child's whole process tree, summed from each process's
``/proc/<pid>/smaps_rollup``: PSS splits shared pages between the processes that map them, so the
sum over the tree counts the file's page-cache pages once, unlike a sum of RSS. Sampled every
~50 ms, or less often when reading is slow: the kernel walks the page tables for it (~45 ms for a
2 GB process on a small VM), so the interval is 10x the last read's time, keeping the sampler to
~10% of one CPU instead of slowing the run it measures):

- ``naive``: ``json.load`` + ``pandas.DataFrame`` + ``to_parquet`` (nested values JSON-encoded so
  pyarrow accepts mixed shapes — the least a naive script must do to run at all);
- ``convert``: ``longmem_etl.snapshots.convert_dump`` on the ``.json`` (whole-file path: worker
  processes on guessed spans, so compare its tree PSS, which counts them, with the goal);
- ``convert-stream``: the same file with ``stream=True`` (ijson, bounded memory);
- ``convert-jsonl``: the same dump as JSON Lines (always streamed, batch by batch);
- ``convert-gz`` / ``convert-gz-stream`` (only when named in ``--modes``): the dump gzipped at
  level 1, converted by default (decompressed to a temp file for the workers) or with ijson.

Usage::

    python benchmarks/bench_convert.py                      # 1,000,000 memories (~800 MB)
    python benchmarks/bench_convert.py --count 200000 --modes naive,convert,convert-jsonl
    python benchmarks/bench_convert.py --dump /tmp/big.json  # reuse a dump (.jsonl made beside it)

Targets (issue 2): convert <= 1/6 of naive wall time with peak RSS <= 1.5 GB; a streaming path
<= 600 MB peak RSS whatever the size.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("naive", "convert", "convert-stream", "convert-jsonl")
# not run by default (they need a gzipped copy of the dump, made once beside it):
GZ_MODES = ("convert-gz", "convert-gz-stream")


def child(mode: str, dump: str, out: str) -> None:
    """Run one mode in this (child) process."""
    if mode == "naive":
        import pandas as pd

        with open(dump, encoding="utf-8") as f:
            data = json.load(f)
        df = pd.DataFrame(data["memories"])
        for col in df.columns:
            if df[col].map(lambda v: isinstance(v, (dict, list))).any():
                df[col] = df[col].map(lambda v: json.dumps(v) if v is not None else None)
        df.to_parquet(Path(out) / "memories.parquet")
        return
    from longmem_etl.snapshots import convert_dump

    stream = True if mode in ("convert-stream", "convert-gz-stream") else None
    res = convert_dump(dump, out, progress=False, stream=stream)
    print(
        json.dumps({"memories": res.memories, "rejected": res.rejected, "streamed": res.streamed})
    )


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(k) for k in f.read().split())
    except OSError:
        pass
    return kids


def tree_pss_kb(pid: int) -> int:
    """Sum of ``Pss:`` (kB) over ``pid`` and its descendants (0 for processes already gone)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
        todo.extend(_children(p))
    return total


def measure(mode: str, dump: Path, workdir: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-", dir=workdir))
    cmd = [sys.executable, __file__, "--child", mode, "--dump", str(dump), "--out", str(out)]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se)
        peak_pss, next_sample = 0, 0.0
        while True:  # sample the tree's PSS until the child exits (noticed within 10 ms)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if now >= next_sample:
                peak_pss = max(peak_pss, tree_pss_kb(proc.pid))
                took = time.perf_counter() - now
                next_sample = now + max(0.05, 10 * took)
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read().decode(), se.read().decode()
    shutil.rmtree(out, ignore_errors=True)
    if code != 0:
        raise SystemExit(f"{mode} failed ({code}): {stderr.strip()[-500:]}")
    return {
        "mode": mode,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_pss_mb": peak_pss / 1024,
        "info": stdout.strip(),
    }


def ensure_dumps(args: argparse.Namespace, workdir: Path, need_jsonl: bool) -> tuple[Path, Path]:
    gen = REPO / "sample_data" / "generate.py"
    dump = Path(args.dump) if args.dump else workdir / f"bench-{args.count}.json"
    if not dump.exists():
        print(f"generating {dump} ({args.count} memories) ...", flush=True)
        subprocess.run(
            [sys.executable, str(gen), "big", "--count", str(args.count), "--out", str(dump)],
            check=True,
        )
    jsonl = dump.with_suffix(".jsonl")
    if need_jsonl and not jsonl.exists():
        print(f"generating {jsonl} ...", flush=True)
        count = args.count
        if args.dump:  # count the memories of a given dump: the generator writes one per line
            with open(dump, "rb") as f:
                count = sum(1 for line in f if line.startswith(b'{"id"'))
        subprocess.run(
            [sys.executable, str(gen), "big", "--count", str(count), "--out", str(jsonl)]
            + ["--format", "jsonl"],
            check=True,
        )
    return dump, jsonl


def ensure_gz(dump: Path) -> Path:
    """``dump`` gzipped at level 1 beside it (made once)."""
    gz = dump.with_name(dump.name + ".gz")
    if not gz.exists():
        print(f"generating {gz} ...", flush=True)
        with open(dump, "rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
    return gz


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--dump", help="an existing .json dump to use")
    p.add_argument("--workdir", default=tempfile.gettempdir())
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of each longmem-etl mode (best wall time is reported, worst RSS; naive runs once)",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.dump, args.out)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    workdir = Path(args.workdir)
    dump, jsonl = ensure_dumps(args, workdir, "convert-jsonl" in modes)
    size = dump.stat().st_size
    print(f"dump: {dump} ({size / 1e6:.0f} MB)", flush=True)
    rows = []
    for mode in modes:
        src = jsonl if mode == "convert-jsonl" else dump
        if mode in GZ_MODES:
            src = ensure_gz(dump)
        runs = []
        for _ in range(1 if mode == "naive" else max(1, args.repeat)):
            r = measure(mode, src, workdir)
            runs.append(r)
            print(
                f"  {mode:15s} {r['wall_s']:7.1f} s  {r['peak_rss_mb']:7.0f} MB RSS  "
                f"{r['peak_pss_mb']:7.0f} MB tree PSS  {r['info']}",
                flush=True,
            )
        best = min(runs, key=lambda r: r["wall_s"])
        best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        best["peak_pss_mb"] = max(r["peak_pss_mb"] for r in runs)
        best["runs"] = len(runs)
        rows.append(best)
    base = next((r for r in rows if r["mode"] == "naive"), None)
    print()
    print(
        "| mode | runs | best wall | its CPU | worst peak RSS | worst peak tree PSS "
        "| wall vs naive | RSS vs naive |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        wall_ratio = f"1/{base['wall_s'] / r['wall_s']:.1f}" if base else "-"
        rss_ratio = f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}x" if base else "-"
        print(
            f"| {r['mode']} | {r['runs']} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s "
            f"| {r['peak_rss_mb']:.0f} MB | {r['peak_pss_mb']:.0f} MB | {wall_ratio} | {rss_ratio} |"
        )
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

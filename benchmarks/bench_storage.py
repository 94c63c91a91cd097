"""Storage benchmark: incremental vs full snapshots, encrypted vs plain (one invocation).

1. A generated dump of N memories (``sample_data/generate.py big``) and a copy with 1% changed
   (0.5% edited, 0.25% deleted, 0.25% added, spread over the account).
2. ``convert`` the first into a root, then the changed one into the same root (an increment) and
   into a fresh root with ``--full`` (the baseline): wall-time ratio and bytes ratio.
3. ``convert --full --encrypt-to`` of the changed dump vs the plain full one, and ``sql`` over the
   encrypted root (decrypting, with ``LONGMEM_ETL_IDENTITY_FILE``) vs the plain root.

``convert`` and ``backup`` share the snapshot writer (hashing, increments, encryption), so the
writer's cost is what is compared. Every step is a real ``longmem-etl`` process; each measurement
is repeated ``--repeat`` times, interleaved (full, increment, encrypted, full, ...), so a load
spike on this shared machine hits every side alike; the minimum of each side is compared. The
load average is printed beside the numbers. Not a test: run it by hand.

    python benchmarks/bench_storage.py                  # 200,000 memories
    python benchmarks/bench_storage.py --count 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "longmem_etl.cli.main"]
SQL = "SELECT count(*), sum(length(text)), count(DISTINCT collection) FROM latest_memories"


def run(args: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one CLI process (fails loudly)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed: {r.stderr.strip()}")
    return time.perf_counter() - t0


def snapshot_bytes(root: Path) -> int:
    """Bytes of the newest snapshot under ``root``."""
    snaps = sorted(root.glob("tenant=*/snapshot=*"))
    return sum(f.stat().st_size for f in snaps[-1].iterdir() if f.is_file())


def changed_copy(src: Path, out: Path, share: float) -> None:
    """``src`` (JSONL, rewritten compact) and a copy with ``share`` of its memories changed: half
    edited, a quarter deleted, a quarter added (new ids), spread evenly over the account. Line by
    line, so 1M memories fit in little memory."""
    lines = src.read_bytes().splitlines()
    header, rows = lines[0], lines[1:]
    n = int(len(rows) * share)
    step = max(1, len(rows) // max(1, n))
    picked = list(range(0, len(rows), step))[:n]
    edit, delete = set(picked[: n // 2]), set(picked[n // 2 : n // 2 + n // 4])
    enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder()
    # both files through one encoder: metadata is stored as the dump's own bytes, so a re-formatted
    # copy would (rightly) count every memory as changed
    with open(src, "wb") as a, open(out, "wb") as b:
        a.write(header + b"\n")
        b.write(header + b"\n")
        first = None
        for i, line in enumerate(rows):
            mem = dec.decode(line)
            first = first or mem
            plain = enc.encode(mem)
            a.write(plain + b"\n")
            if i in delete:
                continue
            if i in edit:
                mem["text"] = mem["text"] + " (edited)"
                plain = enc.encode(mem)
            b.write(plain + b"\n")
        for i in range(n - n // 2 - n // 4):
            added = {**first, "id": f"bench-added-{i}", "text": f"added memory {i}"}
            b.write(enc.encode(added) + b"\n")


def load() -> str:
    """The 1-minute load average (the machine is shared)."""
    return f"{os.getloadavg()[0]:.2f}"


def drop_newest(root: Path) -> None:
    """Remove the newest snapshot under ``root`` (the benchmark's own), to time it again."""
    shutil.rmtree(sorted(root.glob("tenant=*/snapshot=*"))[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=3, help="runs per side (minimum compared)")
    args = ap.parse_args()
    loads = [load()]
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        t = Path(tmp)
        base, changed = t / "base.jsonl", t / "changed.jsonl"
        t0 = time.perf_counter()
        gen = [sys.executable, str(ROOT / "sample_data" / "generate.py"), "big"]
        subprocess.run([*gen, "--count", str(args.count), "--out", str(base), "--format", "jsonl"],
                       check=True, capture_output=True)  # fmt: skip
        changed_copy(base, changed, args.changed)
        print(f"phase: generate {args.count:,} + changed copy: {time.perf_counter() - t0:.1f} s")
        key = t / "bench.key"
        recipient = subprocess.run([*CLI, "keygen", "--out", str(key)], capture_output=True,
                                   text=True, check=True).stdout.strip()  # fmt: skip
        conv = ["convert", "--tenant", "bench"]
        ident = {"LONGMEM_ETL_IDENTITY_FILE": str(key)}
        incr, full, enc = t / "incr", t / "full", t / "enc"
        t0 = time.perf_counter()
        run([*conv, str(base), "--root", str(incr), "--full"])
        print(f"phase: base snapshot (full, hashed): {time.perf_counter() - t0:.1f} s")
        t_inc, t_full, t_enc = [], [], []
        for _ in range(args.repeat):
            shutil.rmtree(full, ignore_errors=True)
            t_full.append(run([*conv, str(changed), "--root", str(full), "--full"]))
            if len(t_inc):
                drop_newest(incr)
            t_inc.append(run([*conv, str(changed), "--root", str(incr)]))
            shutil.rmtree(enc, ignore_errors=True)
            t_enc.append(run([*conv, str(changed), "--root", str(enc), "--full",
                              "--encrypt-to", recipient]))  # fmt: skip
            loads.append(load())
        newest = sorted(incr.glob("tenant=*/snapshot=*"))[-1]
        info = json.loads((newest / "manifest.json").read_text()).get("incremental")
        if not info:
            raise SystemExit("the second convert did not write an increment")
        b_inc, b_full, b_enc = snapshot_bytes(incr), snapshot_bytes(full), snapshot_bytes(enc)
        s_plain, s_enc, s_incr = [], [], []
        for _ in range(args.repeat):
            s_plain.append(run(["sql", "--root", str(full), SQL]))
            s_enc.append(run(["sql", "--root", str(enc), SQL], ident))
            s_incr.append(run(["sql", "--root", str(incr), SQL]))
            loads.append(load())

    print(f"{args.count:,} memories, {args.changed:.1%} changed; increment: "
          f"{info['changed_rows']:,} changed rows, {info['removed_ids']:,} tombstones")  # fmt: skip
    print(f"runs per side: {args.repeat} (min compared); load average 1 min: {' '.join(loads)}")
    print(f"{'measure':44} {'value':>12} {'baseline':>12} {'ratio':>7} {'goal':>7}  met")
    rows = [
        ("incremental convert: wall s (vs full)", min(t_inc), min(t_full), 1.3),
        ("incremental convert: bytes (vs full)", b_inc, b_full, 0.05),
        ("encrypted full convert: wall s (vs plain)", min(t_enc), min(t_full), 1.3),
        ("encrypted full convert: bytes (vs plain)", b_enc, b_full, None),
        ("sql over encrypted root: wall s (vs plain)", min(s_enc), min(s_plain), 1.3),
        ("sql over incremental root: wall s (vs full)", min(s_incr), min(s_plain), None),
    ]
    for name, v, b, goal in rows:
        fmt = (lambda x: f"{x:12,.0f}") if isinstance(v, int) else (lambda x: f"{x:12.2f}")
        met = "" if goal is None else ("yes" if v / b <= goal else "NO")
        g = "" if goal is None else f"{goal:7.2f}"
        print(f"{name:44} {fmt(v)} {fmt(b)} {v / b:7.3f} {g:>7}  {met}")
    print("all runs (s): full " + " ".join(f"{x:.2f}" for x in t_full)
          + " | incr " + " ".join(f"{x:.2f}" for x in t_inc)
          + " | enc " + " ".join(f"{x:.2f}" for x in t_enc)
          + " | sql plain " + " ".join(f"{x:.2f}" for x in s_plain)
          + " | sql enc " + " ".join(f"{x:.2f}" for x in s_enc)
          + " | sql incr " + " ".join(f"{x:.2f}" for x in s_incr))  # fmt: skip


if __name__ == "__main__":
    main()

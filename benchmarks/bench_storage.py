"""Storage benchmark: incremental vs full snapshots, encrypted vs plain (one invocation).

1. A generated dump of N memories (``sample_data/generate.py big``) and a copy with 1% changed
   (0.5% edited, 0.25% deleted, 0.25% added, spread over the account).
2. ``convert`` the first into a root, then the changed one into the same root (an increment) and
   into a fresh root with ``--full`` (the baseline): wall-time ratio and bytes ratio.
3. ``convert --full --encrypt-to`` of the changed dump vs the plain full one, and ``sql`` over the
   encrypted root (decrypting, with ``LONGMEM_ETL_IDENTITY_FILE``) vs the plain root.

Every step is a real ``longmem-etl`` process. Not a test: run it by hand.

    python benchmarks/bench_storage.py                  # 200,000 memories
    python benchmarks/bench_storage.py --count 1000000
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--changed", type=float, default=0.01)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        t = Path(tmp)
        base, changed = t / "base.jsonl", t / "changed.jsonl"
        gen = [sys.executable, str(ROOT / "sample_data" / "generate.py"), "big"]
        subprocess.run([*gen, "--count", str(args.count), "--out", str(base), "--format", "jsonl"],
                       check=True, capture_output=True)  # fmt: skip
        changed_copy(base, changed, args.changed)
        key = t / "bench.key"
        recipient = subprocess.run([*CLI, "keygen", "--out", str(key)], capture_output=True,
                                   text=True, check=True).stdout.strip()  # fmt: skip
        conv = ["convert", "--tenant", "bench"]

        run([*conv, str(base), "--root", str(t / "incr"), "--full"])
        t_inc = run([*conv, str(changed), "--root", str(t / "incr")])
        t_full = run([*conv, str(changed), "--root", str(t / "full"), "--full"])
        b_inc, b_full = snapshot_bytes(t / "incr"), snapshot_bytes(t / "full")
        t_enc = run([*conv, str(changed), "--root", str(t / "enc"), "--full",
                     "--encrypt-to", recipient])  # fmt: skip
        b_enc = snapshot_bytes(t / "enc")
        ident = {"LONGMEM_ETL_IDENTITY_FILE": str(key)}
        s_plain = min(run(["sql", "--root", str(t / "full"), SQL]) for _ in range(3))
        s_enc = min(run(["sql", "--root", str(t / "enc"), SQL], ident) for _ in range(3))
        s_incr = min(run(["sql", "--root", str(t / "incr"), SQL]) for _ in range(3))

    print(f"{args.count:,} memories, {args.changed:.1%} changed")
    print(f"{'measure':44} {'value':>12} {'baseline':>12} {'ratio':>7}")
    rows = [
        ("incremental convert: wall s (vs full)", t_inc, t_full),
        ("incremental convert: bytes (vs full)", b_inc, b_full),
        ("encrypted full convert: wall s (vs plain)", t_enc, t_full),
        ("encrypted full convert: bytes (vs plain)", b_enc, b_full),
        ("sql over encrypted root: wall s (vs plain)", s_enc, s_plain),
        ("sql over incremental root: wall s (vs full)", s_incr, s_plain),
    ]
    for name, v, b in rows:
        fmt = (lambda x: f"{x:12,.0f}") if isinstance(v, int) else (lambda x: f"{x:12.2f}")
        print(f"{name:44} {fmt(v)} {fmt(b)} {v / b:7.3f}")


if __name__ == "__main__":
    main()

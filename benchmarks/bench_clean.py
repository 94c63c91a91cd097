"""Benchmark: the "migration-hygiene" spec through `clean_snapshot` (DuckDB) vs the same steps in pandas.

Both read the same snapshot's memories.parquet and write the cleaned memories plus the rejected rows
(stage, reason, raw dump-form JSON) as Parquet. Each runs in its own child process; we report wall
time and the child's peak RSS (``os.wait4``). Not a test: run it by hand.

    python benchmarks/bench_clean.py --snapshot ROOT/tenant=T/snapshot=TS
    python benchmarks/bench_clean.py --dump big.json --root /tmp/bench   # converts first
    python sample_data/generate.py big --count 1000000 --out /tmp/big.json   # the 1M dump
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "longmem_etl" / "sample_data" / "specs" / "migration-hygiene.toml"
NOW = "2025-11-20T00:00:00+00:00"

# --- the pandas version ----------------------------------------------------------------------------

CONTROL_WS = r"[\t\n\x0b\f\r\x85]"
CONTROL = r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]"
ZW = "[\u200b\u2060\ufeff\u00ad\u180e]"
WS = r"\s+"
PATTERNS = [  # same detectors, same order, as longmem_etl.transforms.redact
    ("secret", None, "[SECRET]"),
    ("email", None, "[EMAIL]"),
    ("card", None, "[CARD]"),
    ("ipv4", None, "[IP]"),
    ("ipv6", None, "[IP]"),
    ("phone", None, "[PHONE]"),
]


def _luhn(s: str) -> bool:
    d = [int(c) for c in s if c.isdigit()]
    if not 13 <= len(d) <= 19:
        return False
    total = 0
    for i, v in enumerate(reversed(d)):
        if i % 2:
            v *= 2
            if v > 9:
                v -= 9
        total += v
    return total % 10 == 0


def run_pandas(snapshot: str, out_dir: str) -> dict:
    import re

    import numpy as np
    import pandas as pd

    from longmem_etl.transforms.redact import BUILTIN

    df = pd.read_parquet(Path(snapshot) / "memories.parquet")
    df["_row"] = np.arange(len(df))
    now = pd.Timestamp(NOW)
    removed = []
    report = []

    def drop(mask, stage, reason, field):
        nonlocal df
        mask = mask.fillna(False).astype(bool)
        rej = df.loc[mask, ["_row", "id"]].copy()
        rej["stage"], rej["reason"], rej["field"] = (
            stage,
            reason[mask] if isinstance(reason, pd.Series) else reason,
            field,
        )
        removed.append(rej)
        report.append((stage, len(df), int((~mask).sum()), int(mask.sum())))
        df = df.loc[~mask]

    drop(df["archived"], "drop_archived", "archived", "archived")
    exp = df["expires_at"] <= now
    drop(
        exp,
        "drop_expired",
        "expired at " + df["expires_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires_at",
    )
    sup = df["superseded_by"].fillna("").str.strip() != ""
    drop(sup, "drop_superseded", "superseded by " + df["superseded_by"].fillna(""), "superseded_by")

    # dedup (same key as the DuckDB version: NFKC, lower, zero-width/control out, spaces collapsed)
    key = df["text"].str.normalize("NFKC").str.lower().str.replace(ZW, "", regex=True)
    key = key.str.replace(CONTROL, "", regex=True).str.replace(WS, " ", regex=True).str.strip()
    df = df.assign(_key=key)
    order = df.sort_values(
        ["updated_at", "created_at", "id", "_row"],
        ascending=[False, False, True, True],
        na_position="last",
    )
    grp = ["_key", "collection", "container_tag"]
    first = order.groupby(grp, dropna=False, sort=False)["id"].transform("first")
    dup = order.duplicated(subset=grp, keep="first") & order["_key"].notna()
    dup = dup.reindex(df.index)
    drop(dup, "dedup", ("duplicate of " + first).reindex(df.index), "text")
    df = df.drop(columns="_key")

    t = df["text"]
    t = t.str.replace(CONTROL_WS, " ", regex=True).str.replace(CONTROL, "", regex=True)
    t = t.str.replace(ZW, "", regex=True).str.replace(WS, " ", regex=True).str.strip()
    df = df.assign(text=t)
    report.append(("normalize_text", len(df), len(df), 0))

    counts = {}
    text = df["text"]
    for name, _, ph in PATTERNS:
        rx = BUILTIN[name][0]
        if name == "card":
            cand = text.str.contains(rx, regex=True, na=False)
            sub = text[cand]
            crx = re.compile(rx)
            hits = [0]

            def fix(s: str, crx: re.Pattern = crx, ph: str = ph, hits: list = hits) -> str:
                for m in crx.findall(s):
                    if _luhn(m):
                        hits[0] += 1
                        s = s.replace(m, ph)
                return s

            text = text.copy()
            text[cand] = sub.map(fix)
            counts[f"text:{name}"] = hits[0]
        else:
            counts[f"text:{name}"] = int(text.str.count(rx).fillna(0).sum())
            text = text.str.replace(rx, ph, regex=True)
    df = df.assign(text=text)
    report.append(("redact", len(df), len(df), 0))

    out = Path(out_dir)
    df.drop(columns="_row").to_parquet(out / "memories.parquet", index=False)
    rej = pd.concat(removed)
    # raw: the removed rows as they came in, in dump form (metadata and unknown fields spliced)
    src = pd.read_parquet(Path(snapshot) / "memories.parquet").iloc[rej["_row"].to_numpy()]
    raws = []
    for rec in src.to_dict("records"):
        rec = {
            k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v)
            for k, v in rec.items()
        }
        extra, fid, meta = rec.pop("extra"), rec.pop("fidelity"), rec.get("metadata")
        for k in ("created_at", "updated_at", "expires_at"):
            v = rec[k]
            rec[k] = (
                None if v is None else v.strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")
            )
        for k in ("pinned", "archived"):
            rec[k] = None if rec[k] is None else bool(rec[k])
        rec["metadata"] = None if meta is None else json.loads(meta)
        if fid:
            f = json.loads(fid)
            for k in f.get("absent", []):
                rec.pop(k, None)
            rec.update(f.get("raw", {}))
        if extra:
            rec.update(json.loads(extra))
        raws.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
    rej = rej.rename(columns={"_row": "row_index"}).assign(raw=raws)
    rej.to_parquet(out / "rejected.parquet", index=False)
    return {"rows_out": len(df), "rejected": len(rej), "counts": counts, "steps": report}


def run_duckdb(snapshot: str, out_dir: str) -> dict:
    from datetime import datetime

    from longmem_etl.transforms.run import clean_snapshot

    res = clean_snapshot(snapshot, SPEC, out_dir, now=datetime.fromisoformat(NOW))
    return {"rows_out": res.report.rows_out, "rejected": res.report.rejected, "path": str(res.path)}


# --- harness ----------------------------------------------------------------------------------------


def child(which: str, snapshot: str, out_dir: str) -> None:
    t0 = time.perf_counter()
    result = (run_duckdb if which == "duckdb" else run_pandas)(snapshot, out_dir)
    result["seconds_inside"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(result, default=str))


def measure(which: str, snapshot: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-clean-{which}-") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", which, "--snapshot", snapshot, "--out", out],
            stdout=subprocess.PIPE,
            text=True,
        )
        stdout = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if status != 0:
            raise SystemExit(f"{which} failed (status {status})")
        result = json.loads(stdout.strip().splitlines()[-1])
        result.update(wall=round(wall, 2), peak_rss_mb=round(usage.ru_maxrss / 1024, 1))
        return result


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--snapshot")
    ap.add_argument("--dump", help="convert this dump first (into --root)")
    ap.add_argument("--root", default=None)
    ap.add_argument("--child", choices=("duckdb", "pandas"))
    ap.add_argument("--out")
    ap.add_argument("--only", choices=("duckdb", "pandas"))
    args = ap.parse_args()
    if args.child:
        child(args.child, args.snapshot, args.out)
        return 0
    snapshot = args.snapshot
    if args.dump:
        from longmem_etl.snapshots.convert import convert_dump

        root = args.root or tempfile.mkdtemp(prefix="bench-clean-src-")
        snapshot = str(convert_dump(args.dump, root, progress=False).path)
    if not snapshot:
        ap.error("--snapshot or --dump is required")
    rows = {}
    for which in ("duckdb", "pandas"):
        if args.only and which != args.only:
            continue
        rows[which] = measure(which, snapshot)
        print(which, json.dumps(rows[which], default=str)[:300], file=sys.stderr)
    print(f"snapshot: {snapshot}")
    print(f"{'engine':8} {'wall s':>8} {'peak RSS MB':>12} {'rows out':>10} {'rejected':>9}")
    for which, r in rows.items():
        print(
            f"{which:8} {r['wall']:8.2f} {r['peak_rss_mb']:12.1f} {r['rows_out']:10,} {r['rejected']:9,}"
        )
    if len(rows) == 2:
        d, p = rows["duckdb"], rows["pandas"]
        print(
            f"speed-up {p['wall'] / d['wall']:.1f}x; RSS {d['peak_rss_mb'] / p['peak_rss_mb']:.2f} of pandas"
        )
        if (d["rows_out"], d["rejected"]) != (p["rows_out"], p["rejected"]):
            print("WARNING: the two versions disagree on counts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

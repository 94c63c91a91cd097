"""Benchmark: snapshot roots on loopback S3 (moto in server mode) vs local disk, one invocation.

    python benchmarks/bench_s3.py [--count 100000] [--snapshots 20] [--repeat 2]

Needs the test extra (``moto[server]``). Every measured step is the real CLI in a child process
(interpreter start included on both sides), configured only by the AWS environment:

- ``backup --full`` of a seeded embedded tenant of ``--count`` memories to a local root and to
  ``s3://`` (goal: S3 within 2x of local);
- ``sql`` ``count(*)`` and a ``GROUP BY`` over ``--snapshots`` snapshots of that tenant's data (one
  per tenant name) on a local root and on the same files uploaded to S3 (goal: within 3x).

Prints a Markdown table of best wall times and the S3/local ratios. Not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "longmem_etl.cli.main"]
COUNT_SQL = "SELECT count(*) FROM memories"
GROUP_SQL = (
    "SELECT tenant, collection, count(*) AS n, avg(length(text)) AS chars "
    "FROM memories GROUP BY ALL ORDER BY ALL"
)


def run(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{args[0]} failed ({r.returncode}): {r.stderr.strip()}")
    return took


def best(n: int, fn) -> float:  # noqa: ANN001
    return min(fn(i) for i in range(n))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--snapshots", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=2)
    opts = ap.parse_args()

    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LONGMEM_ETL_", "AWS_"))}
    env.update(aws, PYTHONPATH=str(REPO))
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench-secret")  # fmt: skip
    client.create_bucket(Bucket="bench")
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        t = Path(tmp)
        dump = t / "big.json"
        subprocess.run([sys.executable, str(REPO / "sample_data" / "generate.py"), "big",
                        "--count", str(opts.count), "--out", str(dump)], check=True, capture_output=True)  # fmt: skip
        db = t / "acct.db"
        run(["local", "seed", f"local:{db}", "--from", str(dump)], env)
        env["LONGMEM_ETL_HOME"] = str(t / "home")

        def backup_local(i: int) -> float:
            return run(
                ["backup", "--source", f"local:{db}", "--root", str(t / f"b{i}"), "--full"], env
            )

        def backup_s3(i: int) -> float:
            return run(
                ["backup", "--source", f"local:{db}", "--root", f"s3://bench/b{i}", "--full"], env
            )

        rows.append(
            ("backup --full", best(opts.repeat, backup_local), best(opts.repeat, backup_s3))
        )

        local = t / "many"
        for i in range(opts.snapshots):
            run(["convert", str(dump), "--root", str(local), "--tenant", f"t{i:02d}"], env)
        for f in local.rglob("*"):
            if f.is_file():
                client.upload_file(str(f), "bench", f"many/{f.relative_to(local).as_posix()}")
        for label, sql in (("sql count(*)", COUNT_SQL), ("sql group by", GROUP_SQL)):
            on_disk = best(
                opts.repeat, lambda _i, s=sql: run(["sql", s, "--root", str(local)], env)
            )
            on_s3 = best(
                opts.repeat, lambda _i, s=sql: run(["sql", s, "--root", "s3://bench/many"], env)
            )
            rows.append((f"{label}, {opts.snapshots} snapshots", on_disk, on_s3))
        size = sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
    server.stop()
    print(
        f"{opts.count:,} memories; sql over {opts.snapshots} snapshots ({size / 1e6:.0f} MB); best of {opts.repeat}\n"
    )
    print("| step | local disk | loopback S3 | S3 / local |")
    print("|---|---:|---:|---:|")
    for label, a, b in rows:
        print(f"| {label} | {a:.2f} s | {b:.2f} s | {b / a:.2f}× |")


if __name__ == "__main__":
    main()

"""A migration run killed mid-upload (SIGKILL, a real process) resumes when materialized again.

The first ``tenant_migration`` run is a separate Python process materializing into a shared
on-disk Dagster instance, uploading to a slow embedded target; it is killed once the journal shows
finished chunks. Materializing again in this process must find the same journal (``resumed``), send
only what was left, and pass the exact verification check: the target holds every memory once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, materialize
from pipelines_support import isolated_env

from pipelines.definitions import CHECKS
from pipelines.migration.assets import tenant_migration
from pipelines.partitions import register_tenants
from pipelines.resources import default_resources
from pipelines.utils import latest_metadata

TENANT = "acme-small"  # seeded from longmem_etl/sample_data/acme-small.json: 50 memories
CHILD = """
import json, sys
from dagster import DagsterInstance, materialize
from pipelines.migration.assets import tenant_migration
from pipelines.resources import default_resources
materialize([tenant_migration], partition_key=sys.argv[1], resources=default_resources(),
            instance=DagsterInstance.get(), run_config=json.loads(sys.argv[2]))
"""


def _done_chunks(home: Path) -> int:
    for journal in home.glob("migrations/*/journal.sqlite"):
        try:
            con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
            try:
                return con.execute("SELECT count(*) FROM chunks WHERE state='done'").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            return 0
    return 0


def test_killed_migration_resumes_and_lands_every_memory_once(tmp_path, monkeypatch):
    from longmem_etl.api.endpoints import open_endpoint

    env = isolated_env(tmp_path)
    for k in ("DAGSTER_HOME", "LONGMEM_ETL_HOME"):
        monkeypatch.setenv(k, env[k])
    state = Path(env["LONGMEM_ETL_HOME"])
    instance = DagsterInstance.get()
    register_tenants(instance, [TENANT])
    from pipelines.backup.assets import memories_snapshot

    res = default_resources()
    assert materialize(
        [memories_snapshot], partition_key=TENANT, resources=res, instance=instance
    ).success
    target = state / "targets" / f"{TENANT}.sqlite"
    config = {
        "ops": {
            "tenant_migration": {
                "config": {
                    "target_uri": f"local:{target}?latency_ms=150",
                    "chunk_size": 5,
                    "concurrency": 1,
                }
            }
        }
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, TENANT, json.dumps(config)],
        env={**env, "PYTHONPATH": str(Path(__file__).parent)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _done_chunks(state) < 2:
            assert child.poll() is None, "the first run ended before it could be killed"
            assert time.monotonic() < deadline, "no chunk finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    landed = _done_chunks(state)

    result = materialize(
        [tenant_migration, *CHECKS],
        selection=[tenant_migration.key],
        partition_key=TENANT,
        resources=res,
        instance=instance,
        run_config=config,
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    meta = latest_metadata(instance, tenant_migration.key, TENANT)
    assert meta["resumed"] is True and meta["verified_exact"] is True
    assert meta["items_done"] == 50 == meta["items_total"]
    assert 2 <= landed < meta["chunks_done"] == meta["chunks_total"]  # killed part-way
    store = open_endpoint(f"local:{target}", create=False)
    try:
        assert store.count() == 50  # every memory exactly once
    finally:
        store.close()

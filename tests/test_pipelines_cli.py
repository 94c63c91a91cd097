"""``dagster asset materialize -m pipelines`` as a real subprocess, offline, with no configuration.

A temporary DAGSTER_HOME (telemetry off) and state dir; the tenant is registered in that instance
with ``python -m pipelines.tenants add`` (the documented no-code way), then the CLI materializes the
backup for the ``acme`` partition (in-process executor, to keep the test quick; the default
multiprocess executor is what ``dagster dev`` and the other CLI paths use by default).
"""

from __future__ import annotations

import json
import subprocess
import sys

from pipelines_support import VENV_BIN, isolated_env


def _run(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=240)


def test_cli_materializes_the_backup_for_a_registered_tenant(tmp_path):
    env = isolated_env(tmp_path)
    env["LONGMEM_ETL_EXECUTOR"] = "in_process"  # one process: the machine is small and shared
    state = tmp_path / "state"

    added = _run([sys.executable, "-m", "pipelines.tenants", "add", "acme"], env, tmp_path)
    assert added.returncode == 0, added.stderr
    assert "added: acme" in added.stdout

    done = _run(
        [str(VENV_BIN / "dagster"), "asset", "materialize", "-m", "pipelines"]
        + ["--select", "memories_snapshot,account_dump", "--partition", "acme"],
        env,
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    snaps = sorted((state / "snapshots" / "tenant=acme").glob("snapshot=*"))
    assert len(snaps) == 1
    manifest = json.loads((snaps[0] / "manifest.json").read_text())
    assert manifest["counts"]["memories"] == 2000
    assert (state / "dumps" / "tenant=acme" / f"{snaps[0].name}.json.zst").is_file()
    assert (state / "tenants" / "acme.sqlite").is_file()
    # the run history lives in the test's DAGSTER_HOME, telemetry stayed off
    assert (tmp_path / "dagster_home" / "history").is_dir()
    assert not (tmp_path / "dagster_home" / ".telemetry").exists()

"""The webserver loads ``pipelines`` and its GraphQL asset graph lists our assets.

A real ``dagster-webserver`` on 127.0.0.1 and a free port, in its own process group (it starts a code
server child), stopped with the whole group at the end so nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from pipelines_support import VENV_BIN, isolated_env

EXPECTED = {
    "account_dump",
    "memories_snapshot",
    "memories_clean",
    "warehouse",
    "memories_report",
    "tenant_migration",
}
QUERY = "{ assetNodes { assetKey { path } } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _wait_for_assets(proc: subprocess.Popen, port: int, deadline: float) -> set[str]:
    """Poll until the code location is loaded and answers with asset nodes (bounded)."""
    last: object = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"webserver exited early with {proc.returncode}"
        try:
            data = _graphql(port, QUERY)
            nodes = (data.get("data") or {}).get("assetNodes") or []
            names = {"/".join(n["assetKey"]["path"]) for n in nodes}
            if names:
                return names
            last = data
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"webserver did not list assets in time; last answer: {last!r}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # children (the code server) share the group: make sure none survived
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _group_gone(pgid: int, deadline: float) -> bool:
    """True once no process is left in the group (orphans are reaped by init), bounded."""
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_webserver_lists_pipeline_assets(tmp_path):
    port = _free_port()
    log = open(tmp_path / "webserver.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "dagster-webserver"),
            "-m",
            "pipelines",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        names = _wait_for_assets(proc, port, time.monotonic() + 90)
        assert names >= EXPECTED, names
        checks = _graphql(
            port,
            '{ assetNodeOrError(assetKey: {path: ["memories_snapshot"]}) '
            "{ ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name } } } } } }",
        )
        node = checks["data"]["assetNodeOrError"]
        check_names = {c["name"] for c in node["assetChecksOrError"]["checks"]}
        assert {"manifest_counts_match", "ids_unique", "schema_matches"} <= check_names
    finally:
        _stop(proc)
        log.close()
    assert proc.poll() is not None
    assert _group_gone(proc.pid, time.monotonic() + 30), "webserver processes left running"

"""Contract suite fixtures: the same behavioural tests against every ``LongmemAPI`` implementation.

``api`` is parametrised over the embedded store (plain, and through a URI with zero-valued fault
options) and over the official-SDK adapter talking to an SDK-shaped double backed by the embedded
store. Tests that only the embedded store can promise take ``local_api`` instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sdk_double import install  # noqa: E402

from longmem_etl.api.endpoints import open_endpoint  # noqa: E402

IMPLS = ["local", "local-faults0", "sdk-adapter"]


def _open(kind: str, tmp_path: Path, monkeypatch):
    if kind == "local":
        return open_endpoint(f"local:{tmp_path}/t.db")
    if kind == "local-faults0":
        return open_endpoint(
            f"local:{tmp_path}/t.db?latency_ms=0&fail_rate=0&ambiguous_rate=0&rate_limit_rps=0&seed=5"
        )
    mod = install(monkeypatch)
    mod.reset()
    mod.BACKEND = f"local:{tmp_path}/server.db"
    monkeypatch.setenv("CONTRACT_KEY", "lm_contract_key")
    return open_endpoint("https://longmem.example", key_env="CONTRACT_KEY")


@pytest.fixture(params=IMPLS)
def api(request, tmp_path, monkeypatch):
    ep = _open(request.param, tmp_path, monkeypatch)
    yield ep
    ep.close()
    if request.param == "sdk-adapter":
        sys.modules["longmem"].reset()


@pytest.fixture(params=IMPLS[:2])
def local_api(request, tmp_path, monkeypatch):
    ep = _open(request.param, tmp_path, monkeypatch)
    yield ep
    ep.close()

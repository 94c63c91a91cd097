"""Every test gets its own state home: migrations' journals and locks never land in the user's
``~/.local/state`` and never leak between tests (a test may still set its own)."""

from __future__ import annotations

import pytest

pytest_plugins = ["s3_support"]


@pytest.fixture(autouse=True)
def _isolated_state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    monkeypatch.setenv("LONGMEM_ETL_HOME", str(tmp_path_factory.mktemp("state-home")))

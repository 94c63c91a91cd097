"""Every test runs in its own world, so the suite can run in parallel (pytest-xdist) and in any order.

- its own state home (``LONGMEM_ETL_HOME``): migrations' journals and locks never land in the user's
  ``~/.local/state`` and never leak between tests (a test may still set its own);
- its own empty working directory: verbs that keep work under the cwd (``quickstart``'s
  default dir, an older ``restore``'s ``.longmem-etl/restores/``) or read it (``report`` looks for
  ``.longmem-etl/migrations`` there) never share the checkout's cwd with another test or worker.

Tests that need the checkout use absolute paths (``Path(__file__)``); child processes started by a
test inherit both (``cli_support.run_cli`` keeps the state home and nothing else of ``LONGMEM_ETL_*``).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import configuration

pytest_plugins = ["s3_support"]

# A suite started in the background by a non-interactive shell (`cmd &`, nohup, some CI runners)
# inherits SIGINT *ignored*: Python then never raises KeyboardInterrupt, `interruptible` stays inert
# and every child inherits the same. The Ctrl-C tests need what a terminal gives, so put Python's
# default handler back here (each xdist worker imports this); the children then start with SIGINT
# at its default, as under a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Hypothesis keeps its example database under its home, by default the cwd at first use: pin it to
# the checkout so failing examples are still replayed first although each test has its own cwd.
configuration.set_hypothesis_home_dir(str(Path(__file__).resolve().parents[1] / ".hypothesis"))


@pytest.fixture(autouse=True)
def _isolated_state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    monkeypatch.setenv("LONGMEM_ETL_HOME", str(tmp_path_factory.mktemp("state-home")))


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """A fresh cwd that is not ``tmp_path`` (tests asserting what ``tmp_path`` holds stay exact)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def etl_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deployment-free environment for the Dagster tests: no ``LONGMEM_ETL_*`` variable of the
    developer's, and the state home in this test's ``tmp_path/state`` (returned)."""
    for var in list(os.environ):
        if var.startswith("LONGMEM_ETL_"):
            monkeypatch.delenv(var)
    state = tmp_path / "state"
    monkeypatch.setenv("LONGMEM_ETL_HOME", str(state))
    return state

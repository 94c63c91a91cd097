"""Helpers to put an SDK-shaped ``longmem`` module in place (in-process or for subprocesses)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

FAKE = Path(__file__).parent / "fake_sdk"
WRONG = Path(__file__).parent / "fake_sdk_wrong"


def install(monkeypatch, which: Path = FAKE):
    """Import ``longmem`` from ``which`` for this test only; returns the module."""
    monkeypatch.delitem(sys.modules, "longmem", raising=False)
    monkeypatch.syspath_prepend(str(which))
    mod = importlib.import_module("longmem")
    assert Path(mod.__file__).parent.parent == which
    return mod

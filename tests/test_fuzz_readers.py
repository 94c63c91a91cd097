"""A short bounded run of ``benchmarks/fuzz_readers.py``: Hypothesis-generated hostile dumps through
``convert`` in every format; exit 0 or 2, never an internal error. (Run the script for minutes.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_readers.py"


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_readers", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fuzz_readers_bounded() -> None:
    _fuzz().run(25)


def test_the_property_sees_exit_codes() -> None:
    """The checker reports real exit codes: a deep row converts (0), a NUL file is refused (2)."""
    mod = _fuzz()
    deep = b'{"memories":[{"id":"a","text":"t","metadata":' + b"[" * 5000 + b"]" * 5000 + b"}]}"
    assert mod.convert_exit(deep, ".json", [])[0] == 0
    code, err = mod.convert_exit(b"\x00", ".json", [])
    assert code == 2 and len(err.strip().splitlines()) == 1
    mod.check(deep)

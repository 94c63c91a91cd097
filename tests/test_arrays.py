"""`arrays.strings` (the column builder every Arrow-from-Python path uses without pandas): the same
array ``pa.array(values, pa.string())`` gives, for ASCII, non-ASCII, empty and null values, in a
process where pandas was never imported (the fast path)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = r"""
import sys
from longmem_etl.arrays import strings
from longmem_etl.arrays import int64s_with_nulls as _int64s
cases = [
    ("a", None, "é✓", "", "日本語", "x" * 70000),
    tuple(f"{i:064x}" for i in range(5000)),
    tuple(None if i % 7 else f"m-{i}" for i in range(1000)),
    (),
    (None, None),
    ("plain",),
]
for c in cases:
    a = strings(c)
    assert a.to_pylist() == list(c), c[:3]
    assert a.null_count == sum(v is None for v in c)
try:
    strings(("\ud800",))
    raise SystemExit("a lone surrogate was encoded")
except UnicodeEncodeError:
    pass
assert _int64s((1, None, 3)).to_pylist() == [1, None, 3]
assert _int64s((1, 2)).to_pylist() == [1, 2] and _int64s(()).to_pylist() == []
assert "pandas" not in sys.modules, "the fast path imported pandas"
print("ok")
"""


def test_strings_and_ints_from_python_values_without_pandas() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"

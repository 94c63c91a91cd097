"""`memory.use_lean_arrow_pool`: migrate and verify run with Arrow on the system allocator, unless
the user chose a pool through ``ARROW_DEFAULT_MEMORY_POOL`` (each case in a fresh process: the
pool is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = (
    "import pyarrow as pa; from longmem_etl.memory import use_lean_arrow_pool; "
    "changed = use_lean_arrow_pool(); print(changed, pa.default_memory_pool().backend_name)"
)


@pytest.mark.parametrize(
    ("env", "want"),
    [(None, "True system"), ("jemalloc", "False jemalloc"), ("system", "False system")],
)
def test_the_pool_is_system_unless_the_user_chose(env, want) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env is not None:
        environ["ARROW_DEFAULT_MEMORY_POOL"] = env
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=environ, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == want.split()

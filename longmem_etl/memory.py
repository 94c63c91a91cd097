"""Process-wide memory choices for the long jobs (`migrate`, `verify`): one place, one reason each.

*Arrow's allocator.* pyarrow's default pool (mimalloc) keeps what it frees for reuse by Arrow
only; a migration allocates Arrow buffers in bursts (the freeze converts the whole dump, the
verification reads the whole target) between long stretches where Python and SQLite, not Arrow,
need the memory, so the kept segments only raise the peak. With the system allocator freed
buffers go back to malloc (large ones straight to the OS). Measured on the 200,000-memory
held-out dump (`benchmarks/bench_verify.py`, one process each, the same minute): whole `migrate`
peak RSS 515 MB -> 476 MB, the freeze phase's 439 -> 243 MB; `convert` of the same dump alone
219-227 -> 173-195 MB at the same CPU time (2.3-2.6 s user either way). A user who sets
``ARROW_DEFAULT_MEMORY_POOL`` keeps their choice.
"""

from __future__ import annotations

import os

_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def use_lean_arrow_pool() -> bool:
    """Make the system allocator Arrow's default pool for the rest of the process (unless the
    user chose one through ``ARROW_DEFAULT_MEMORY_POOL``). True when it was changed. Buffers
    already allocated stay with the pool that made them, so this is safe at any time."""
    if os.environ.get(_POOL_ENV):
        return False
    import pyarrow as pa

    if pa.default_memory_pool().backend_name == "system":
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    return True

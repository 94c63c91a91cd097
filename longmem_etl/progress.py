"""Progress bars that show on a terminal and stay silent in pipes, logs and CI."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress(total: int | None = None, *, desc: str, unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, disabled unless stderr is a terminal (so ``--json`` and pipes stay clean)."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        **kwargs,
    )

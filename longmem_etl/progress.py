"""Progress: a tqdm bar on a terminal; in pipes, logs and CI either silence or (``heartbeat``) one
plain line on stderr every few seconds.

A long run with no terminal (a migration under cron, CI or ``| tee``) must not look hung: with
``heartbeat=True`` a background thread prints ``desc: done/total unit (pct), rate, elapsed`` every
``LONGMEM_ETL_PROGRESS_SECONDS`` seconds (default 5), whether or not anything moved — so a target
that fails every call still shows a line while the retries run. stdout (``--json``) stays clean.

tqdm is imported only when a bar is drawn: without a terminal the silent case is a `Quiet`
object, so a run in a pipe (every migration under cron, every test) never imports tqdm (~20 ms
of start-up before the first call).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

DEFAULT_HEARTBEAT_S = 5.0


def heartbeat_seconds() -> float:
    """The heartbeat interval: ``$LONGMEM_ETL_PROGRESS_SECONDS`` (> 0), else 5 s."""
    try:
        value = float(os.environ.get("LONGMEM_ETL_PROGRESS_SECONDS", ""))
    except ValueError:
        return DEFAULT_HEARTBEAT_S
    return value if value > 0 else DEFAULT_HEARTBEAT_S


class Heartbeat:
    """The part of tqdm's interface the toolkit uses (``update``, ``close``, ``n``), printing a
    line every ``interval`` seconds from a daemon thread instead of drawing a bar."""

    def __init__(
        self, total: int | None, *, desc: str, unit: str = "it", interval: float | None = None
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.interval = interval or heartbeat_seconds()
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{desc}", daemon=True)
        self._thread.start()

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        with self._lock:
            n = self.n
        of = ""
        if self.total:
            of = f"/{self.total} ({100.0 * n / self.total:.0f}%)"
        rate = n / elapsed if elapsed > 0 else 0.0
        return (
            f"{self.desc}: {n}{of} {self.unit}s, {rate:.1f} {self.unit}/s, {elapsed:.0f}s elapsed"
        )

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                print(self.line(), file=sys.stderr, flush=True)
            except (OSError, ValueError):  # stderr closed: nothing to tell anyone
                return

    def close(self) -> None:
        self._done.set()
        self._thread.join(1.0)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Quiet:
    """The part of tqdm's interface the toolkit uses, doing nothing: the bar of a run with no
    terminal (what a disabled tqdm does, without importing tqdm)."""

    def __init__(self, total: int | None = None) -> None:
        self.total = total
        self.n = 0
        self.disable = True

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    total: int | None = None,
    *,
    desc: str,
    unit: str = "it",
    heartbeat: bool = False,
    show: bool = True,
    **kwargs: Any,
) -> Any:
    """A tqdm bar on stderr when stderr is a terminal. Otherwise silent (`Quiet`), or with
    ``heartbeat`` a plain line every few seconds (see the module docstring). ``show=False``:
    silent wherever stderr goes (a bar made and then disabled has already drawn a line)."""
    if not show:
        return Quiet(total)
    if not sys.stderr.isatty():
        return Heartbeat(total, desc=desc, unit=unit) if heartbeat else Quiet(total)
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        **kwargs,
    )

"""Freeze, plan and upload as one pipeline: the uploader runs in a thread fed with chunk numbers
as the planner commits them, while this thread is still converting the dump.

Why: the freeze (convert the dump into the frozen snapshot) and the plan are local CPU, the
upload is the API's latency; run one after the other, a user waits for their sum. Here the first
calls go out once the first batch of rows is converted and its plan rows are durable.

The guarantees are the streamed plan's (`planstream`): a chunk is queued only after the
transaction holding its plan rows commits, and no row is written before the target's markers are
known (`engine.HoldingsRead`), so an item the target already holds is never sent again. A run
stopped or killed while the freeze is still going leaves the plan unfinished (``planned`` unset):
the next run plans afresh and learns from the markers what already landed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class FreezeStopped(Exception):
    """Raised from the freeze's row hand-over to abandon it (a stop was asked for)."""


class PlanFailed(Exception):
    """Raised from the freeze's row hand-over when planning the rows failed (the holdings read,
    the journal), so the caller tells it apart from a problem with the source."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class UploadInBackground:
    """The uploader, started on the first chunk (``start()`` builds it: the target is opened only
    once there is something to send), run in its own thread; `put` feeds it, `close` says no
    more chunks are coming and waits for the upload to end."""

    def __init__(self, start: Callable[[], Any], stop: threading.Event) -> None:
        self._start, self._stop = start, stop
        self._chunks: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.uploader: Any = None
        self.stats: Any = None
        self._error: BaseException | None = None
        self.first_chunk_at: float | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def put(self, chunk_no: int) -> None:
        """Queue a chunk whose plan rows are durable (starts the upload on the first one)."""
        if self._thread is None:
            self._launch()
        self._chunks.put(chunk_no)

    def _launch(self) -> None:
        import time

        self.first_chunk_at = time.monotonic()
        self.uploader = self._start()
        self._thread = threading.Thread(target=self._run, name="upload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.uploader.run(resumed=False, feed=self._feed)
        except BaseException as exc:  # noqa: BLE001 - re-raised by close() in the caller's thread
            self._error = exc

    def _feed(self, work: Any) -> None:
        """The uploader's ``feed``: runs in its feeder thread until `close` (or a stop)."""
        while True:
            try:
                chunk_no = self._chunks.get(timeout=0.05)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if chunk_no is None:
                return
            work.put(chunk_no)

    def close(self) -> Any:
        """No more chunks: wait for the upload to finish; its stats (raises what it raised).
        With nothing ever queued, the uploader still runs once (it reconciles and reports)."""
        if self._thread is None:
            self._launch()
        assert self._thread is not None
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.stats

    def abandon(self) -> None:
        """The freeze failed: stop the upload (calls out settle) and wait for it."""
        if self._thread is None:
            return
        self._stop.set()
        self._chunks.put(None)
        self._thread.join()

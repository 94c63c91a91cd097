"""One run at a time: an OS lock (``fcntl.flock``) held for the whole run.

The kernel drops a ``flock`` when its process dies (SIGKILL included), so a lock can never go
stale; no pid files to clean up. The lock file also says who holds it (pid, host, started,
command) so a refused run can name the holder. Two locks are taken, always in this order:

1. the identity lock ``{home}/locks/<migration id>.lock``: two runs of the same source -> target
   with *different* journals still exclude each other;
2. the work dir lock (the work dir's marker file, `workdir.MARKER`): two runs sharing one journal
   exclude each other.

``wait=True`` blocks until the holder finishes instead of refusing (exit 2).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from longmem_etl.errors import BadInput


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.get("started", 0)))
    return (
        f"pid {info.get('pid')} on {info.get('host')}, started {started}, "
        f"command: {info.get('command')}"
    )


@contextmanager
def run_lock(path: Path, *, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Refuses with BadInput naming the holder when taken (unless ``wait``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise BadInput(
                    f"{what} is already being run by {describe_holder(_holder(path))} "
                    f"(lock {path}); wait for it, or pass --wait"
                ) from None
            fcntl.flock(fd, fcntl.LOCK_EX)
        info = {
            "tool": "longmem-etl",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


@contextmanager
def migration_locks(
    identity_lock: Path, work_dir_lock: Path, *, what: str, wait: bool = False
) -> Iterator[None]:
    """Both locks of a migration (identity first, then the journal's work dir marker: one order,
    no deadlock)."""
    with ExitStack() as stack:
        stack.enter_context(run_lock(identity_lock, what=what, wait=wait))
        stack.enter_context(run_lock(work_dir_lock, what=what, wait=wait))
        yield

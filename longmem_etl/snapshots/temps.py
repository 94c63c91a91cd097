"""Temp dirs under a snapshot root: marked as their writer's, and swept once their writer is gone.

Every writer (``SnapshotWriter``: convert, backup, clean, migrate's frozen source; convert's
decompressed copy) works in ``ROOT/.tmp-*`` and holds a locked ``.owner`` file there while it runs.
A killed process leaves the dir behind with the lock released, so the next writer on that root
removes it at once; an ownerless ``.tmp-*`` (an older tool, a prune in progress) only once it is
older than ``STALE_TEMP_AGE``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

OWNER_FILE = ".owner"
STALE_TEMP_AGE = timedelta(hours=6)


class Owner:
    """A held ``.owner`` lock in a temp dir; ``release()`` removes it (before a commit's rename)."""

    def __init__(self, tmp: Path) -> None:
        self.file = tmp / OWNER_FILE
        self.fd: int | None = os.open(self.file, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()
            os.close(self.fd)
            self.fd = None


def new_owned_dir(root: str | os.PathLike, prefix: str = ".tmp-") -> tuple[Path, Owner]:
    """A fresh ``ROOT/<prefix>*`` dir and its held ``.owner`` lock (the dir is removed again if the
    lock cannot be taken). The caller releases the lock and commits or removes the dir."""
    os.makedirs(root, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        return tmp, Owner(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def owned(tmp: Path) -> Iterator[Owner]:
    """(Context) ``tmp`` marked as this process's while the block runs."""
    owner = Owner(tmp)
    try:
        yield owner
    finally:
        owner.release()


def owner_alive(tmp: Path) -> bool | None:
    """True/False when the temp dir has an owner file (locked = its writer is alive), else None."""
    try:
        fd = os.open(tmp / OWNER_FILE, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def clean_stale_temps(root: str | os.PathLike, *, max_age: timedelta = STALE_TEMP_AGE) -> list[str]:
    """Remove ``ROOT/.tmp-*`` dirs left by killed writers: those whose owner is dead, and ownerless
    ones older than ``max_age``. Returns their names."""
    rootp = Path(root)
    removed: list[str] = []
    if not rootp.is_dir():
        return removed
    cutoff = time.time() - max_age.total_seconds()
    for tmp in rootp.glob(".tmp-*"):
        if not tmp.is_dir():
            continue
        alive = owner_alive(tmp)
        try:
            old = tmp.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if alive is False or (alive is None and old):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
    return removed

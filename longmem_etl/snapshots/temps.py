"""Temp dirs under a snapshot root: marked as this tool's, and swept only once their writer is gone.

Every writer (``SnapshotWriter``: convert, backup, clean, migrate's frozen source; convert's
decompressed copy; retention's doomed snapshots) works in ``ROOT/.tmp-*`` and holds a locked
``.owner`` file there while it runs. The file's first line is ``MARKER`` followed by the pid, host
and start time, so it proves the directory is ours; the ``flock`` on it proves the writer is alive
(the kernel drops it when the process dies, so a killed run's lock is never stale).

The sweep (:func:`clean_stale_temps`) removes a ``.tmp-*`` directory only when it carries that
marker and the lock is free. Anything else - a user's ``ROOT/.tmp-build-cache``, a dir whose marker
is missing or foreign, however old - is never touched. (``.owner`` files written by earlier
versions hold just the pid; those are recognised too.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

OWNER_FILE = ".owner"
MARKER = "longmem-etl temp dir"
_LEGACY = re.compile(rb"^\d+\n$")  # an earlier version's .owner: the pid alone


class Owner:
    """A held ``.owner`` lock in a temp dir; ``release()`` removes it (before a commit's rename)."""

    def __init__(self, tmp: Path) -> None:
        self.file = tmp / OWNER_FILE
        # O_EXCL: never adopt (or truncate) a file someone else put there
        self.fd: int | None = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            line = f"{MARKER} pid={os.getpid()} host={socket.gethostname()} started={started}\n"
            os.write(self.fd, line.encode())
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
    lock cannot be taken: ``mkdtemp`` just made it, so it is ours). The caller releases the lock and
    commits or removes the dir."""
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


def is_marked(tmp: Path) -> bool:
    """Whether ``tmp`` holds this tool's ``.owner`` marker (a regular file, our first line)."""
    path = tmp / OWNER_FILE
    try:
        if not path.is_file() or path.is_symlink():
            return False
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return head.startswith(MARKER.encode() + b" ") or bool(_LEGACY.match(head))


def owner_alive(tmp: Path) -> bool | None:
    """True/False when the temp dir carries our marker (locked = its writer is alive), else None
    (not ours to judge)."""
    if not is_marked(tmp):
        return None
    try:
        fd = os.open(tmp / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def clean_stale_temps(root: str | os.PathLike) -> list[str]:
    """Remove ``ROOT/.tmp-*`` dirs left by killed runs of this tool: marked ones whose lock is
    free. Unmarked dirs are never touched, whatever their age. Returns the names removed."""
    rootp = Path(root)
    removed: list[str] = []
    if not rootp.is_dir():
        return removed
    for tmp in rootp.glob(".tmp-*"):
        if tmp.is_symlink() or not tmp.is_dir():
            continue
        if owner_alive(tmp) is False:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
    return removed


def leftovers(root: str | os.PathLike) -> list[dict[str, object]]:
    """Every ``ROOT/.tmp-*`` entry with whether it is ours and whether its owner is alive (for
    ``check`` and reports; removes nothing)."""
    rootp = Path(root)
    out: list[dict[str, object]] = []
    if not rootp.is_dir():
        return out
    for tmp in sorted(rootp.glob(".tmp-*")):
        alive = owner_alive(tmp) if tmp.is_dir() and not tmp.is_symlink() else None
        out.append({"path": str(tmp), "ours": alive is not None, "alive": bool(alive)})
    return out

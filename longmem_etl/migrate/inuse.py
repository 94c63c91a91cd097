"""Which snapshots unfinished migrations still read: what ``forget`` must keep.

A migration whose ``--source`` is a snapshot directory does not copy it: the journal's
``frozen_snapshot`` names the directory (pinned by its manifest's sha256 in the plan binding), and a
resumed run, its verification and ``verify`` read it again. Removing it (or, for an increment, a link
of its chain, which ``forget`` would answer by rewriting it as a full snapshot: a new manifest, so a
replan) would leave that migration unable to finish as planned. So ``forget`` keeps such snapshots,
with the migration named as the reason, until the migration has finished.

How a migration is seen, always read-only (a running migration is never blocked or changed):

- **holds**: every run whose source is a snapshot registers it (`holding`) before reading it,
  whatever ``--journal`` says, in ``{state home}/holds/<migration id>.json`` (the source as the
  user named it: an ``s3://`` URL for a source mirrored from S3, which ``forget`` on that S3 root
  matches by URL) and, when the source's root is writable, in ``ROOT/.migration-holds/`` (the
  snapshot, journal, host and pid), which a ``forget`` of any state home or user reads.
- journals under ``{state home}/migrations/`` (migrations of versions before holds existed).

A hold only points at its journal; the journal decides: unfinished keeps the source; finished or
missing does not (unless its writer is still alive: a run registers before it creates its
journal), and ``forget`` sweeps such stale holds (`prune_stale_holds`). A hold that cannot be
checked from here (another host, a journal this user cannot read) keeps the source, and the reason
names the file to delete. A finished run removes its holds.

The holds are written under the source root's ``.forget.lock`` (held by ``forget`` for its whole
run), and the source is checked to still be there afterwards: a ``forget`` that started first
finishes first, and one that starts later sees the hold. Not seen: an ``s3://`` source by a
``forget`` of another state home (S3 roots hold no holds); see ``docs/guarantees.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from longmem_etl.migrate.state import JOURNAL_NAME, migrations_dir, state_home

HOLDS = "holds"
ROOT_HOLDS = ".migration-holds"  # in a snapshot root: seen by a forget of any state home
FORGET_WAIT_S = 120.0  # as long as a forget waits for another one; then exit 2, run again


def holds_dir() -> Path:
    return state_home() / HOLDS


@dataclass(frozen=True)
class Use:
    """One unfinished migration's hold on a snapshot: the reason ``forget`` gives for keeping it.
    ``unchecked``: why its journal could not be read (then ``hold`` is the file to remove once
    that migration is finished or abandoned)."""

    migration_id: str
    journal: Path
    unchecked: str | None = None
    hold: Path | None = None

    def reason(self) -> str:
        in_home = self.journal.parent.parent == migrations_dir()
        where = "" if in_home and not self.unchecked else f" (journal {self.journal})"
        text = f"source of unfinished migration {self.migration_id}{where}"
        if self.unchecked:
            text += (
                f"; {self.unchecked}, so kept: remove {self.hold} once that migration is "
                "finished or abandoned"
            )
        return text


def _meta(con: sqlite3.Connection, key: str) -> object:
    row = con.execute("SELECT v FROM migration WHERE k = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def _journal_state(journal: Path) -> tuple[bool, object]:
    """(finished, frozen_snapshot) of a journal, read-only. Finished: a plan, nothing left to
    send, and a verification written. Raises sqlite3/OS errors for a missing or unreadable file."""
    if not journal.is_file():
        raise FileNotFoundError(journal)
    con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        frozen = _meta(con, "frozen_snapshot")
        pending = con.execute("SELECT 1 FROM items WHERE state = 'planned' LIMIT 1").fetchone()
        finished = bool(
            _meta(con, "planned")
            and pending is None
            and (journal.parent / "verification.json").is_file()
        )
        return finished, frozen
    finally:
        con.close()


def _unfinished_source(journal: Path) -> Path | None:
    """The snapshot directory an unfinished migration reads, or None (finished, or not ours)."""
    finished, frozen = _journal_state(journal)
    if finished or not isinstance(frozen, str) or journal.parent in Path(frozen).parents:
        return None  # nothing frozen yet, or a copy inside its own work dir
    return Path(frozen)


def _held(hold: Path, root: Path | None = None) -> tuple[str, Use] | None:
    """A hold's (source, use) while its journal is unfinished; None when stale (the journal
    missing, or finished). A hold in a snapshot root (``root``) names its snapshot relative to
    it; one made on another host, whose journal cannot be read from here, holds."""
    data = json.loads(hold.read_text(encoding="utf-8"))
    source, journal = data.get("source"), data.get("journal")
    if not isinstance(source, str) or not isinstance(journal, str):
        return None
    if root is not None:
        source = str((root / source).resolve())
    use = Use(str(data.get("migration_id") or hold.stem), Path(journal))
    if root is not None and data.get("host") not in (None, socket.gethostname()):
        return source, Use(use.migration_id, use.journal, f"on host {data.get('host')}", hold)
    try:
        finished, _ = _journal_state(Path(journal))
    except FileNotFoundError:
        if _running(data):  # registered, its journal not created yet
            return source, use
        return None  # its journal is gone: a re-run would plan afresh, from whatever source
    except PermissionError:  # another user's migration: it holds
        return source, Use(use.migration_id, use.journal, "journal not readable", hold)
    return None if finished else (source, use)


def _running(data: dict) -> bool:
    """Whether the process that wrote a hold is still alive on this host (a reused pid only
    makes a hold keep its snapshot a little longer)."""
    pid = data.get("pid")
    if data.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def snapshots_in_use(base: Path | None = None, *, root: Path | None = None) -> dict[str, Use]:
    """``{source: Use}`` for every unfinished migration whose source is a snapshot: the state
    home's journals and holds, and (``root``: a local snapshot root) the holds kept in that root,
    which migrations of any state home write. The source is a resolved local path, or an
    ``s3://`` URL (``base``: another ``migrations`` dir only, no holds)."""
    out: dict[str, Use] = {}
    for journal in sorted((base or migrations_dir()).glob(f"*/{JOURNAL_NAME}")):
        with contextlib.suppress(sqlite3.Error, OSError, ValueError):
            src = _unfinished_source(journal)
            if src is not None:
                out[str(src.resolve())] = Use(journal.parent.name, journal)
    if base is not None:
        return out
    found_in = [(h, None) for h in sorted(holds_dir().glob("*.json"))]
    if root is not None:
        found_in += [(h, root) for h in sorted((root / ROOT_HOLDS).glob("*.json"))]
    for hold, where in found_in:
        with contextlib.suppress(sqlite3.Error, OSError, ValueError, AttributeError, TypeError):
            found = _held(hold, where)
            if found is not None:
                out.setdefault(found[0], found[1])
    return out


def prune_stale_holds(root: Path | None = None) -> list[str]:
    """Remove the holds that keep nothing any more (their journal finished, or gone from this
    host): a migration killed after finishing, or whose work dir the user deleted, would leave
    them behind for ever. Called by ``forget`` under the root's lock; returns the files removed."""
    found = [(h, None) for h in sorted(holds_dir().glob("*.json"))]
    if root is not None:
        found += [(h, root) for h in sorted((root / ROOT_HOLDS).glob("*.json"))]
    removed = []
    for hold, where in found:
        try:
            data = json.loads(hold.read_text(encoding="utf-8"))
            if data.get("tool") != "longmem-etl" or _held(hold, where) is not None:
                continue
            hold.unlink()
            removed.append(str(hold))
        except (sqlite3.Error, OSError, ValueError, AttributeError, TypeError):
            continue  # unreadable or not ours: left alone
    return removed


def _named(source: str) -> str:
    """How a hold names a source: the ``s3://`` URL a mirror stands for, else the resolved path."""
    from longmem_etl.storage.staging import to_remote

    path = Path(source).expanduser()
    remote = to_remote(str(path))
    return remote.rstrip("/") if remote != str(path) else str(path.resolve())


def _write_atomically(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _root_forget_lock(snapshot: Path, stop: threading.Event | None = None) -> Iterator[Path | None]:
    """The snapshot's root's ``.forget.lock`` (the flock a ``forget`` holds for its whole run)
    when the path is laid out as one (``ROOT/tenant=*/snapshot=*``) and the root is writable;
    else nothing (a forget could not remove the snapshot either). Waits for a running forget."""
    from longmem_etl.errors import BadInput
    from longmem_etl.snapshots.layout import FORGET_LOCK, SNAPSHOT_PREFIX, TENANT_PREFIX

    root = snapshot.parent.parent
    laid_out = snapshot.name.startswith(SNAPSHOT_PREFIX) and snapshot.parent.name.startswith(
        TENANT_PREFIX
    )
    if not laid_out or not os.access(root, os.W_OK):
        yield None
        return
    try:  # read-only is enough for flock: a lock file another user made still works
        fd = os.open(root / FORGET_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        yield None  # no lock to share with a forget here: the state home's hold still counts
        return
    try:
        deadline = time.monotonic() + FORGET_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop is not None and stop.is_set():  # Ctrl-C while waiting: nothing done yet
                    raise KeyboardInterrupt from None
                if time.monotonic() >= deadline:
                    raise BadInput(
                        f"{root / FORGET_LOCK}: a forget on the source's root is still running; "
                        "run again when it is done"
                    ) from None
                time.sleep(0.05)
        yield root
    finally:
        os.close(fd)


@contextlib.contextmanager
def holding(
    source: str, migration_id: str, journal: Path, stop: threading.Event | None = None
) -> Iterator[None]:
    """(Context) register that the migration ``migration_id`` (journal ``journal``) reads the
    snapshot ``source`` until it finishes. Not a snapshot directory: nothing to hold.

    The hold stays when the run stops unfinished (killed, Ctrl-C, an error): its journal says so,
    and a resume needs the same source. It is removed once the journal shows the run finished."""
    from longmem_etl.api.endpoints import classify_source
    from longmem_etl.errors import BadInput

    if classify_source(source) != "snapshot":
        yield
        return
    hold = holds_dir() / f"{migration_id}.json"
    snapshot = Path(source).expanduser().resolve()  # a symlink's target: the real root
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {
        "tool": "longmem-etl",
        "migration_id": migration_id,
        "journal": str(journal),
        "host": socket.gethostname(),
        "pid": os.getpid(),  # until the journal exists, a live writer is what holds
    }
    holds = [hold]
    with _root_forget_lock(snapshot, stop) as root:
        _write_atomically(hold, {**record, "source": _named(source), "since": since})
        if root is not None:  # beside the snapshots too: a forget of another state home sees it
            holds.append(root / ROOT_HOLDS / hold.name)
            rel = f"{snapshot.parent.name}/{snapshot.name}"
            with contextlib.suppress(OSError):
                _write_atomically(holds[1], {**record, "source": rel, "since": since})
        if not (snapshot / "manifest.json").is_file():  # a forget that ran first removed it
            for h in holds:
                h.unlink(missing_ok=True)
            raise BadInput(f"--source {source}: no such snapshot (removed by forget?)")
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error, OSError, ValueError):
            if _journal_state(journal)[0]:
                for h in holds:
                    h.unlink(missing_ok=True)

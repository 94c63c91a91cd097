"""How a verb uses an ``s3://`` root: mirror, run the snapshot code unchanged, publish back.

``staged(root, snapshots, write=...)`` yields local paths. For a local root they are the paths
given. For an ``s3://`` root the committed snapshots the verb needs (the whole root, or only the
tenant folders it names) are mirrored into a private temp directory (``$TMPDIR``), so every reader
keeps its integrity checks, increments and decryption exactly as on disk and DuckDB reads local
files (no httpfs download, the same read-only lockdown). With ``write=True`` abandoned uploads are
swept first, and on a clean exit what the verb committed in the mirror is published with the
object-store protocol (``storage/remote.py``): new snapshots uploaded manifest last, rewritten ones
replaced, removed ones deleted manifest first. On an error nothing is published. The mirror is
always removed.

Messages and results name the mirror's paths; :func:`to_remote` maps them back to ``s3://`` URLs
(``cli.common.emit`` and ``cli.main`` apply it), so users never see the temp directory.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from longmem_etl.storage import remote
from longmem_etl.storage.store import Store, is_remote, open_store, split_snapshot_url

_MIRRORS: list[tuple[str, str]] = []  # (local dir, s3 url): kept for the process, for messages


def to_remote(text: str) -> str:
    """``text`` with every mirror path replaced by the ``s3://`` URL it stands for."""
    for local, url in _MIRRORS:
        if local in text:
            text = text.replace(local, url)
    return text


def remote_paths(value: Any) -> Any:
    """``value`` (a result object, list, dict, path or text) with every mirror path inside it
    replaced by its ``s3://`` URL, in place for objects; for the Python API's results."""
    if not _MIRRORS:
        return value
    if isinstance(value, Path):
        text = to_remote(str(value))
        return text if text != str(value) else value
    if isinstance(value, str):
        return to_remote(value)
    if isinstance(value, list):
        return [remote_paths(v) for v in value]
    if isinstance(value, tuple):
        return tuple(remote_paths(v) for v in value)
    if isinstance(value, dict):
        return {k: remote_paths(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            object.__setattr__(value, f.name, remote_paths(getattr(value, f.name)))
    return value


def _published(local_root: Path) -> dict[str, bytes]:
    """Committed snapshots in a mirror: ``tenant=*/snapshot=*`` → manifest bytes."""
    out = {}
    for m in local_root.glob("tenant=*/snapshot=*/" + remote.MANIFEST):
        out[f"{m.parent.parent.name}/{m.parent.name}"] = m.read_bytes()
    return out


class Mirror:
    """A private local copy of (part of) an S3 root, and what was in it when pulled."""

    def __init__(self, store: Store, local: Path, folders: Sequence[str] | None) -> None:
        self.store = store
        self.local = local
        self.folders = None if folders is None else set(folders)
        self.groups: dict[str, remote.Prefix] = {}
        self.before: dict[str, bytes] = {}
        self.swept: list[dict[str, str]] = []

    def pull(self, *, sweep: bool) -> None:
        self.groups = remote.group(self.store.list_all())
        if sweep:
            self.swept = remote.sweep(self.store, self.groups)
            for d in self.swept:
                self.groups.pop(d["rel"], None)
        rels = [
            r
            for r in remote.committed(self.groups)
            if self.folders is None or r.split("/")[0] in self.folders
        ]
        self.before = remote.pull(self.store, self.groups, rels, self.local)

    def publish(self) -> None:
        """Send what the verb changed in the mirror: new snapshots, then rewritten ones, then
        removals (so a backup's retention never removes before the new snapshot is visible)."""
        after = _published(self.local)
        for rel in sorted(set(after) - set(self.before)):
            remote.publish_snapshot(self.store, self.local / rel, rel)
        for rel in sorted(set(after) & set(self.before)):
            if after[rel] != self.before[rel]:
                remote.replace_snapshot(self.store, self.local / rel, rel, self.groups.get(rel))
        for rel in sorted(set(self.before) - set(after)):
            names = list(self.groups[rel].objects) if rel in self.groups else []
            remote.remove_snapshot(self.store, rel, names)


@contextlib.contextmanager
def mirror(
    root: str,
    *,
    write: bool = False,
    folders: Sequence[str] | None = None,
    sweep: bool | None = None,
) -> Iterator[Mirror]:
    """(Context) a :class:`Mirror` of the S3 ``root`` (only ``folders``, ``tenant=...`` names, when
    given); published back on a clean exit when ``write``."""
    store = open_store(root)
    local = Path(tempfile.mkdtemp(prefix="longmem-etl-s3-"))
    _MIRRORS.append((str(local), store.url))
    try:
        m = Mirror(store, local, folders)
        m.pull(sweep=write if sweep is None else sweep)
        yield m
        if write:
            m.publish()
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _folders_for(tenant: str | None, snapshot_rels: Sequence[str]) -> list[str] | None:
    if tenant is None and not snapshot_rels:
        return None
    from longmem_etl.snapshots.layout import encode_tenant, sanitize_tenant

    out = [r.split("/")[0] for r in snapshot_rels]
    if tenant is not None:
        out += [f"tenant={encode_tenant(tenant)}", f"tenant={sanitize_tenant(tenant)}"]
    return out


@contextlib.contextmanager
def staged(
    root: str | os.PathLike | None,
    snapshots: Sequence[str | os.PathLike | None] = (),
    *,
    write: bool = False,
    tenant: str | None = None,
    whole_root: bool = False,
) -> Iterator[tuple[str | None, list[str | None]]]:
    """(Context) local stand-ins for a root and snapshot paths, any of which may be ``s3://``.

    A snapshot URL under ``root`` is found in the root's mirror; the root's mirror holds only the
    tenant folders of ``tenant`` and of those snapshots unless ``whole_root`` (or neither is known:
    then all of it). Any other snapshot URL gets a mirror of its own tenant folder (increments
    need their chain). Local paths pass through unchanged."""
    with contextlib.ExitStack() as stack:
        root_text = os.fspath(root) if root is not None else None
        root_local: str | None = root_text
        snaps = [os.fspath(s) if s is not None else None for s in snapshots]
        out: list[str | None] = list(snaps)
        if root_text is not None and is_remote(root_text):
            base = open_store(root_text).url
            inside = [
                (i, s[len(base) + 1 :].rstrip("/"))
                for i, s in enumerate(snaps)
                if s and is_remote(s) and s.startswith(base + "/")
            ]
            folders = None if whole_root else _folders_for(tenant, [r for _, r in inside])
            m = stack.enter_context(mirror(root_text, write=write, folders=folders))
            root_local = str(m.local)
            for i, rel in inside:
                out[i] = str(m.local / rel)
        for i, s in enumerate(snaps):
            if s is None or not is_remote(s) or out[i] != s:
                continue
            split = split_snapshot_url(s)
            if split is None:
                from longmem_etl.errors import BadInput

                raise BadInput(
                    f"{s}: not a snapshot URL (expected s3://BUCKET/PREFIX/tenant=T/snapshot=TS)"
                )
            sroot, rel = split
            m = stack.enter_context(mirror(sroot, folders=[rel.split("/")[0]]))
            out[i] = str(m.local / rel)
        yield root_local, out


def lasting_mirror(root: str) -> Path:
    """A read-only mirror of the S3 ``root`` that lives until the process exits (for a DuckDB
    connection, whose lifetime no context manager covers)."""
    store = open_store(root)
    local = Path(tempfile.mkdtemp(prefix="longmem-etl-s3-"))
    _MIRRORS.append((str(local), store.url))
    atexit.register(shutil.rmtree, local, True)
    m = Mirror(store, local, None)
    m.pull(sweep=False)
    return local


__all__ = ["Mirror", "lasting_mirror", "mirror", "remote_paths", "staged", "to_remote"]

"""Snapshot -> dump file (``write_dump``), lossless and atomic (temp file in the target dir, then ``os.replace``).

The format comes from the extension (``dumps/formats.py``): ``.json``, ``.json.gz``, ``.json.zst``, ``.jsonl``,
``.jsonl.gz``, ``.jsonl.zst``. A written dump always has ``"format_version": 1`` first; JSONL starts
with one header line (every top-level key but memories, format_version first), then one memory per
line. Memories
are encoded in batches straight from the snapshot's exact JSON (``msgspec.Raw``), never through
Python floats.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import IO, Any

import msgspec

from longmem_etl import jsonio
from longmem_etl.dumps.readers.base import dump_format
from longmem_etl.errors import BadInput, environment_problem
from longmem_etl.progress import progress as progress_bar
from longmem_etl.snapshots.reader import open_snapshot


def _open_out(path: Path, compression: str | None, fd: int) -> IO[bytes]:
    raw = os.fdopen(fd, "wb")
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=True)  # type: ignore[return-value]
    return raw


TMP_TAG = ".longmem-etl-"  # in a temp file's name: ``.{out name}.longmem-etl-XXXXXXXX.tmp``


def _lock(path: Path) -> int | None:
    """An fd holding ``flock`` on ``path`` (the writer's claim while it writes), or None."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def sweep_dead_temps(out: Path) -> list[Path]:
    """Remove temp files a killed ``dump --out`` of this same name left beside it: only names with
    the tool's tag, and only when no writer holds their lock (a dump running now keeps its own)."""
    import glob

    removed = []
    for p in out.parent.glob(f".{glob.escape(out.name)}{TMP_TAG}*.tmp"):
        fd = _lock(p)
        if fd is None:
            continue
        try:
            p.unlink(missing_ok=True)
            removed.append(p)
        finally:
            os.close(fd)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _line(memory: dict[str, Any]) -> bytes:
    """One JSONL line: verbatim values may hold newlines (whitespace only), so compact those."""
    enc = jsonio.dumps(memory)
    if b"\n" in enc or b"\r" in enc:
        enc = msgspec.json.format(enc, indent=0)
    return enc


def write_dump(
    snapshot_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    batch_size: int = 20_000,
    progress: bool = False,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Write the snapshot as a dump file; returns ``{path, memories, collections, format}``.

    ``overwrite=False`` (the CLI without ``--force``) never replaces an existing file: BadInput
    naming it, checked first and enforced at the end with ``os.link`` (which fails if the name
    appeared meanwhile) instead of ``os.replace``."""
    snap = open_snapshot(snapshot_path)
    out = Path(out_path)
    kind, compression = dump_format(out)
    if out.is_dir():
        raise BadInput(f"{out}: is a directory, expected a dump file name")
    if not out.parent.exists():
        raise BadInput(f"{out.parent}: no such directory")
    if not overwrite and (out.exists() or out.is_symlink()):
        raise BadInput(f"{out}: already exists; choose another --out or pass --force to replace it")
    top = snap.dump_top()
    collections = snap.collections(raw=True) if snap.has_collections else None
    sweep_dead_temps(out)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}{TMP_TAG}", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    claim = _lock(tmp)  # held until the file is in place: a concurrent sweep leaves it alone
    count = 0
    bar = progress_bar(snap.counts.get("memories"), desc="dump", unit="mem", show=progress)
    try:
        f = _open_out(out, compression, fd)
        with f, bar:
            if kind == "jsonl":
                header = dict(top)
                if collections is not None:
                    header["collections"] = collections
                f.write(_line(header) + b"\n")
                for batch in snap.iter_dump_memories(batch_size, raw=True):
                    f.write(b"\n".join(_line(m) for m in batch) + b"\n")
                    count += len(batch)
                    bar.update(len(batch))
            else:
                body = dict(top)
                if collections is not None:
                    body["collections"] = collections
                head = jsonio.dumps(body)
                # reopen the object to append the memories array without holding it in memory
                f.write(head[:-1] + (b',"memories":[' if len(head) > 2 else b'"memories":['))
                first = True
                for batch in snap.iter_dump_memories(batch_size, raw=True):
                    if not batch:
                        continue
                    encoded = jsonio.dumps(batch)
                    if not first:
                        f.write(b",")
                    f.write(encoded[1:-1])
                    first = False
                    count += len(batch)
                    bar.update(len(batch))
                f.write(b"]}\n")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a dump file is an ordinary file
        if overwrite:
            os.replace(tmp, out)
        else:
            try:
                os.link(tmp, out)
            except FileExistsError:
                raise BadInput(f"{out}: appeared while writing; not replaced") from None
            tmp.unlink()
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if claim is not None:
            os.close(claim)
            claim = None
        # disk full / file size limit: exit 2 naming the file being written (a write error
        # carries no file name of its own)
        if isinstance(exc, Exception) and (problem := environment_problem(exc, str(out))):
            raise problem from None
        raise
    finally:
        if claim is not None:
            os.close(claim)
    return {
        "path": str(out),
        "memories": count,
        "collections": len(collections or []),
        "format": kind + (f"+{compression}" if compression else ""),
        "snapshot": str(snap.path),
    }

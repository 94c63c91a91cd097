"""``manifest.json``: what a snapshot holds and how to check it (written last, so its presence means
the snapshot is complete).

Keys (``schemas/manifest.schema.json`` describes them): ``format_version``, ``tool`` {name, version},
``tenant``, ``snapshot`` (dir name), ``created_at``, ``exported_at``, ``source`` (no secrets),
``parent`` (a snapshot path or null), ``counts`` {memories, collections, rejected}, ``files``
{name: {sha256, bytes}}, ``manifest_sha256`` (checksum of the rest, ``snapshots.integrity``), ``dump_header`` (every top-level dump key except memories/collections, values
exact), ``has_collections`` (whether the dump had a ``collections`` key), plus any ``extra_manifest``
entries a caller added at the top level.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from longmem_etl import jsonio
from longmem_etl.errors import BadInput

MANIFEST = "manifest.json"
RESERVED_KEYS = frozenset(
    {
        "format_version",
        "tool",
        "tenant",
        "snapshot",
        "created_at",
        "row_hashes",
        "exported_at",
        "source",
        "parent",
        "counts",
        "files",
        "dump_header",
        "has_collections",
        "incremental",
        "encryption",
        "manifest_sha256",
    }
)


def file_digest(path: str | os.PathLike) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` (exact numbers, pretty for humans) with fsync, sealed with its own
    checksum (``manifest_sha256``, see ``snapshots.integrity``; set on ``manifest`` too)."""
    from longmem_etl.snapshots.integrity import seal

    path = Path(directory) / MANIFEST
    data = jsonio.dumps(seal(manifest))
    # msgspec has no indent option on encode; re-format for readability keeping exact numbers
    import msgspec

    pretty = msgspec.json.format(data, indent=2)
    with open(path, "wb") as f:
        f.write(pretty + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a snapshot dir; BadInput when there is none (so it is not a snapshot)."""
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise BadInput(f"{directory}: no such snapshot directory")
    if not path.is_file():
        raise BadInput(f"{directory}: not a snapshot (no {MANIFEST})")
    try:
        manifest = jsonio.loads(path.read_bytes())
    except Exception as exc:
        raise BadInput(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or "files" not in manifest:
        raise BadInput(f"{path}: not a snapshot manifest")
    return manifest

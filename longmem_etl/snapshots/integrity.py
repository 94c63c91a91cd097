"""Is a snapshot what its manifest says? The one place every reader asks.

A snapshot is trusted only through its ``manifest.json``, so the manifest is covered too:

- ``manifest_sha256`` (a top-level manifest key) is the sha256 of the manifest's *canonical form*:
  every key except ``manifest_sha256`` itself, keys sorted at every level, compact UTF-8 JSON with
  numbers exact (``jsonio``). Editing any value (a count, ``has_collections``, the dump header's
  tenant, a file's size) without recomputing it is caught. It detects damage and careless edits, not
  a determined forger (there is no secret key): anyone who can write the directory can recompute it.
- **Old manifests** (written before the checksum existed) have no ``manifest_sha256``; they are
  accepted, and still get every other check below. ``check`` reports them as ``unsealed`` (a note,
  not damage). A manifest that has the key with a wrong value is damaged.
- ``files`` may name only plain file names ending in ``.parquet`` directly inside the snapshot
  directory (no ``/``, ``\\``, ``..``, absolute paths, nor a symlink leading elsewhere):
  ``{"/etc/passwd": ...}`` or ``{"../x": ...}`` is refused before anything is read.
- ``memories.parquet`` and ``collections.parquet`` must be listed; each listed file must exist with the
  manifest's byte size, and its Parquet footer must say the row count in ``counts`` (footer metadata
  only: cheap). ``read_data`` (a fraction 0..1) also hashes that share of the files with sha256.
- An **increment** (``snapshots/incremental.py``) lists ``changed_memories.parquet`` and
  ``removed_ids.parquet`` instead of ``memories.parquet``, and is intact only when every snapshot of
  its chain (parent, ..., full base) is: a damaged or missing link is a ``chain`` problem naming it.
- An **encrypted** snapshot (``snapshots/crypto.py``) lists ``NAME.age`` for each of those and its
  sealed full manifest ``manifest.full*.json.age``: sizes and sha256 are checked as listed; row
  counts only where readable (plain Parquet), since ciphertext has no footer.

``verify_at_open`` (sizes, footers, manifest checksum; optionally full sha256) is what every reader
calls before reading (``open_snapshot``, the warehouse, Dagster); ``check_snapshot`` returns every
problem instead of raising the first, for ``longmem-etl check``.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from longmem_etl.errors import BadInput

MANIFEST = "manifest.json"
CHECKSUM_KEY = "manifest_sha256"
REQUIRED_FILES = ("memories.parquet", "collections.parquet")
_CANONICAL = msgspec.json.Encoder(decimal_format="number", order="sorted")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a snapshot: where (``file`` None = the snapshot as a whole) and what.

    ``kind``: ``manifest`` (unreadable / checksum / shape), ``unsafe-name``, ``missing``, ``size``,
    ``parquet`` (footer unreadable), ``rows`` (row count differs from ``counts``), ``sha256``,
    ``chain`` (an increment's parent or base is missing or damaged).
    """

    snapshot: str
    file: str | None
    kind: str
    message: str

    def __str__(self) -> str:
        where = f"{self.snapshot}: {self.file}" if self.file else self.snapshot
        return f"snapshot {where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 hex of the manifest's canonical form (see module doc), ignoring ``manifest_sha256``."""
    body = {k: v for k, v in manifest.items() if k != CHECKSUM_KEY}
    return hashlib.sha256(_CANONICAL.encode(body)).hexdigest()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """Set ``manifest[CHECKSUM_KEY]`` for the manifest as it is now (call after the last change)."""
    manifest[CHECKSUM_KEY] = manifest_checksum(manifest)
    return manifest


def safe_file_name(directory: Path, name: Any) -> Path | None:
    """The path of ``name`` inside ``directory`` when it is a plain ``*.parquet`` name there (or an
    encrypted snapshot's ``*.parquet.age`` / ``manifest.full*.json.age``), else None."""
    if not isinstance(name, str):
        return None
    sealed_manifest = name.startswith("manifest.full") and name.endswith(".json.age")
    if not (name.endswith((".parquet", ".parquet.age")) or sealed_manifest):
        return None
    if name in {"", ".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        return None
    path = directory / name
    if path.is_symlink() and path.resolve().parent != directory.resolve():
        return None
    return path


def _load_manifest(directory: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    from longmem_etl import jsonio

    snap = str(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        return None, [Problem(snap, None, "missing", "no such snapshot directory")]
    if not path.is_file():
        return None, [Problem(snap, MANIFEST, "missing", f"not a snapshot (no {MANIFEST})")]
    try:
        manifest = jsonio.loads(path.read_bytes())
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, [Problem(snap, MANIFEST, "manifest", f"unreadable manifest ({msg})")]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None, [Problem(snap, MANIFEST, "manifest", "not a snapshot manifest (no 'files')")]
    problems: list[Problem] = []
    stored = manifest.get(CHECKSUM_KEY)
    if stored is not None and stored != manifest_checksum(manifest):
        problems.append(
            Problem(snap, MANIFEST, "manifest", f"edited: its {CHECKSUM_KEY} does not match")
        )
    if not isinstance(manifest.get("counts"), dict):
        problems.append(Problem(snap, MANIFEST, "manifest", "no 'counts' object"))
    return manifest, problems


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _file_problems(
    directory: Path, name: str, info: Any, counts: dict[str, Any], hash_it: bool
) -> list[Problem]:
    import pyarrow.parquet as pq

    snap = str(directory)
    path = safe_file_name(directory, name)
    if path is None:
        return [Problem(snap, name, "unsafe-name", "not a file name inside the snapshot directory")]
    if not isinstance(info, dict):
        return [Problem(snap, name, "manifest", "its manifest entry is not an object")]
    if not path.is_file():
        return [Problem(snap, name, "missing", "is missing")]
    size = path.stat().st_size
    if size != info.get("bytes"):
        return [
            Problem(snap, name, "size", f"has {size} bytes, the manifest says {info.get('bytes')}")
        ]
    if not name.endswith(".parquet"):  # ciphertext: size (above) and bytes only
        if hash_it and _digest(path) != info.get("sha256"):
            return [Problem(snap, name, "sha256", "checksum mismatch (its bytes changed)")]
        return []
    table = name.removesuffix(".parquet")
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a broken footer
        msg = (str(exc).splitlines() or [type(exc).__name__])[0]
        return [Problem(snap, name, "parquet", f"not a readable Parquet file ({msg})")]
    expected = counts.get(table)
    if table in counts and rows != expected:
        return [Problem(snap, name, "rows", f"has {rows} rows, the manifest says {expected}")]
    if hash_it and _digest(path) != info.get("sha256"):
        return [Problem(snap, name, "sha256", "checksum mismatch (its bytes changed)")]
    return []


def check_snapshot(path: str | os.PathLike, *, read_data: float = 0.0) -> list[Problem]:
    """Every problem found in the snapshot at ``path`` (empty when it is intact).

    ``read_data``: the share of files (0..1) whose bytes are hashed; 1.0 hashes all of them, 0.0 only
    checks sizes and Parquet footers. Files are picked at random, so repeated partial checks cover
    everything over time.
    """
    return _check(Path(path), read_data)[1]


def required_files(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The files ``manifest`` must list: a full snapshot's or an increment's, ``.age`` when encrypted."""
    if isinstance(manifest.get("incremental"), dict):
        names: tuple[str, ...] = (
            "changed_memories.parquet",
            "removed_ids.parquet",
            "collections.parquet",
        )
    else:
        names = REQUIRED_FILES
    if isinstance(manifest.get("encryption"), dict):
        names = tuple(n + ".age" for n in names)
    return names


def _check(directory: Path, read_data: float) -> tuple[dict[str, Any] | None, list[Problem]]:
    manifest, problems = _check_one(directory, read_data)
    if manifest is None or problems or not isinstance(manifest.get("incremental"), dict):
        return manifest, problems
    # an increment is intact only with its whole chain (parent, ..., full base)
    from longmem_etl.snapshots.incremental import MAX_CHAIN

    link, link_manifest = directory, manifest
    for _ in range(MAX_CHAIN + 1):
        info = link_manifest.get("incremental")
        if not isinstance(info, dict):
            return manifest, problems
        parent = info.get("parent")
        if not isinstance(parent, str) or safe_dir_name(parent) is None:
            msg = f"bad incremental parent {parent!r} in {link.name}"
            return manifest, [Problem(str(directory), None, "chain", msg)]
        child = link
        link = directory.parent / parent
        link_manifest, found = _check_one(link, read_data)
        if found or link_manifest is None:
            msg = f"chain broken at {parent}: {found[0] if found else 'unreadable'}"
            return manifest, [Problem(str(directory), None, "chain", msg)]
        if not is_recorded_parent(info, link_manifest):
            msg = f"chain broken at {parent}: not the snapshot {child.name} was written against"
            return manifest, [Problem(str(directory), None, "chain", msg)]
    msg = f"chain longer than {MAX_CHAIN} (a cycle?)"
    return manifest, [Problem(str(directory), None, "chain", msg)]


def is_recorded_parent(increment: dict[str, Any], parent_manifest: dict[str, Any]) -> bool:
    """Whether ``parent_manifest`` is the snapshot the increment (its ``incremental`` entry) was
    written against: its ``manifest_sha256``, or the one it had before ``forget`` rebased it (same
    state). Increments from before the checksum was recorded are taken as they are."""
    want = increment.get("parent_manifest_sha256")
    if want is None:
        return True
    rebased = parent_manifest.get("rebased")
    before = rebased.get("from_manifest") if isinstance(rebased, dict) else None
    return want in (parent_manifest.get(CHECKSUM_KEY), before)


def safe_dir_name(name: str) -> str | None:
    """``name`` when it is a plain sibling directory name (no separators, not ``.``/``..``)."""
    if name in {"", ".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        return None
    return name


def _check_one(directory: Path, read_data: float) -> tuple[dict[str, Any] | None, list[Problem]]:
    manifest, problems = _load_manifest(directory)
    if manifest is None:
        return None, problems
    files = manifest["files"]
    counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
    for name in required_files(manifest):
        if name not in files:
            problems.append(Problem(str(directory), name, "manifest", "not listed in the manifest"))
    for name, info in files.items():
        hash_it = read_data >= 1.0 or (read_data > 0 and random.random() < read_data)
        problems.extend(_file_problems(directory, name, info, counts, hash_it))
    # the most telling first: a name reaching outside the snapshot, then the rest in order
    problems.sort(key=lambda p: p.kind != "unsafe-name")
    return manifest, problems


def is_sealed(manifest: dict[str, Any]) -> bool:
    """Whether the manifest carries its own checksum (written by a version that seals)."""
    return CHECKSUM_KEY in manifest


def verify_at_open(
    path: str | os.PathLike, *, checksums: bool = False, chain: bool = True
) -> dict[str, Any]:
    """The snapshot's manifest after checking it (see module doc); ``BadInput`` naming the snapshot and
    the file for the first problem. ``checksums`` also hashes every file (for verbs that read all
    the bytes anyway). ``chain=False``: an increment's own files only (a decrypted copy, whose
    parents are elsewhere)."""
    check = _check if chain else _check_one
    manifest, problems = check(Path(path), 1.0 if checksums else 0.0)
    if problems or manifest is None:
        raise BadInput(str(problems[0]))
    return manifest


__all__ = [
    "CHECKSUM_KEY",
    "Problem",
    "check_snapshot",
    "is_sealed",
    "manifest_checksum",
    "required_files",
    "safe_file_name",
    "seal",
    "verify_at_open",
]

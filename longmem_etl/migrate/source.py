"""Migration sources and targets: identify them, and freeze a source as a snapshot.

A migration must upload exactly what its first run planned, even if the source account keeps
changing or the dump file is replaced. So the first run *freezes* the source into the migration's
working directory — an endpoint is backed up into it, a dump file converted into it, a snapshot
directory referenced by path and pinned by its manifest's sha256 — and ``--spec`` cleans that frozen
snapshot into ``frozen/cleaned``. The plan is then made from the frozen (cleaned) snapshot only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longmem_etl.api.endpoints import classify_source, endpoint_identity, is_endpoint, open_endpoint
from longmem_etl.dumps.formats import dump_stem
from longmem_etl.dumps.readers.base import DEFAULT_BATCH
from longmem_etl.errors import BadInput
from longmem_etl.snapshots.manifest import file_digest

READ_BATCH = 2000
ROWS_BATCH = 2000
"""Rows per converted batch when the freeze hands its rows over (`freeze`'s ``on_rows``)."""
FIRST_ROWS = 1000
"""The first such batch (then 2000): the planner's first durable transaction is 1,000 rows
(`planstream.FIRST_BATCH`), so converting more before it only delays the first calls."""


@dataclass
class _Opened:
    """A dump file opened (scanned whole) to learn its tenant, kept for the freeze to reuse."""

    key: tuple[str, int, int, int, int]
    dump: Any


_OPENED: list[_Opened] = []  # at most one: the last dump opened by `stable_source_identity`
_DIGESTS: dict[tuple[str, int, int, int, int], Any] = {}  # file key -> Future of (sha256, size)
_LOCK = threading.Lock()


def _file_key(path: Path) -> tuple[str, int, int, int, int]:
    """What says a file is unchanged since it was read: its path, device, inode, size, mtime."""
    st = path.stat()
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _open_for_freeze(path: Path, *, keep: bool) -> Any:
    """``open_dump`` with the batch sizes `freeze` uses when it hands rows over; with ``keep``
    remembered (one at a time) so that the freeze does not scan the file a second time: a
    whole-file ``.json`` is mapped and validated by one msgspec pass (~30 ms per 10k memories)."""
    from longmem_etl.dumps.read import open_dump

    key = _file_key(path)
    dump = open_dump(path, batch_size=ROWS_BATCH, first_batch=FIRST_ROWS)
    if keep and not dump.streamed:  # a streaming reader read only the header: nothing to keep
        with _LOCK:
            _OPENED[:] = [_Opened(key, dump)]
    return dump


def take_opened(path: Path) -> Any:
    """The dump `stable_source_identity` opened at ``path``, once, if the file is unchanged
    since (else None: the caller opens it). Each opened dump is read by one freeze only."""
    return _kept(path, take=True)


def opened_total(source: str) -> int | None:
    """Memories in the dump kept for the freeze at ``source`` (`take_opened` still to come),
    else None: the progress total a pipelined run shows until its plan's count is known (rows
    the freeze rejects are in it; the plan's own count replaces it when the freeze ends)."""
    if classify_source(source) != "dump":
        return None
    dump = _kept(Path(source), take=False)
    return None if dump is None else dump.total


def _kept(path: Path, *, take: bool) -> Any:
    """The dump kept by `_open_for_freeze` if it was opened at ``path`` and the file is unchanged
    since, else None; ``take``: and no longer kept, whatever the answer."""
    with _LOCK:
        opened = _OPENED[:]
        if take:
            _OPENED.clear()
    if not opened:
        return None
    try:
        key = _file_key(path)
    except OSError:
        return None
    return opened[0].dump if opened[0].key == key else None


def forget_opened() -> None:
    """Drop what this process remembered of a run's dump (its mapped file, its digest)."""
    with _LOCK:
        _OPENED.clear()
        _DIGESTS.clear()


def dump_digest(path: Path) -> tuple[str, int]:
    """``(sha256, size)`` of a dump file, hashed once per content per process until
    `forget_opened`: the plan binding (`source_identity`) and the frozen snapshot's manifest
    (`freeze`) both need it, and a second caller waits for the first one's hash."""
    from concurrent.futures import Future

    key = _file_key(path)
    with _LOCK:
        future = _DIGESTS.get(key)
        mine = future is None
        if mine:
            if len(_DIGESTS) >= 8:  # a long-lived process (Dagster) keeps only recent files'
                _DIGESTS.clear()
            future = _DIGESTS[key] = Future()
    if mine:
        try:
            future.set_result(file_digest(path))
        except BaseException as exc:
            future.set_exception(exc)
    return future.result()


def source_identity(source: str, *, key_env: str) -> dict[str, Any]:
    """Secret-free identity: endpoint identity, dump path + content sha256, or snapshot path +
    manifest sha256. Part of the migration id and the journal binding."""
    kind = classify_source(source)
    if kind == "endpoint":
        return {"kind": "endpoint", **endpoint_identity(source, key_env)}
    path = Path(source).expanduser().resolve()
    if kind == "dump":
        return {"kind": "dump", "path": str(path), "sha256": dump_digest(path)[0]}
    return {
        "kind": "snapshot",
        "path": str(path),
        "manifest_sha256": file_digest(path / "manifest.json")[0],
    }


def stable_source_identity(
    source: str, *, key_env: str, keep_opened: bool = False
) -> dict[str, Any]:
    """What the source *is*, unchanged by edits to its content: the account for an endpoint
    (`endpoint_identity`: local path, or base URL + key fingerprint), the tenant for a dump file or
    a snapshot (the dump's own ``tenant`` value, else the file stem). A dead-letter file replays
    under the source key its items' markers carry. ``keep_opened``: a migration about to freeze
    the dump keeps it opened for `freeze` (`take_opened`; `forget_opened` when it ends)."""
    kind = classify_source(source)
    if kind == "endpoint":
        return {"account": endpoint_identity(source, key_env)}
    path = Path(source).expanduser()
    from longmem_etl.snapshots.layout import tenant_from_header

    if kind == "dump":
        if is_dead_letter_file(path):
            key = _dead_letter_source_key(path)
            if key:
                return {"source_key": key}
        header = _open_for_freeze(path, keep=keep_opened).header
        return {"tenant": tenant_from_header(header) or _stem(path)}
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{source}: not a readable snapshot ({exc})") from None
    tenant = tenant_from_header(manifest.get("dump_header") or {}) or manifest.get("tenant")
    return {"tenant": str(tenant or path.name)}


def _stem(path: Path) -> str:
    """The dump's name without its suffix, as ``convert`` names a tenant (``dumps/formats.py``)."""
    return dump_stem(path)


def source_key(identity: dict[str, Any], copy: str | None = None) -> str:
    """The 16-hex key every marker carries. ``copy`` names a deliberate second copy."""
    if "source_key" in identity and copy is None:
        return str(identity["source_key"])
    blob = json.dumps({"identity": identity, "copy": copy}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _dead_letter_source_key(path: Path) -> str | None:
    from longmem_etl.migrate.keys import marker_of

    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                item = json.loads(line).get("item") or {}
            except (ValueError, AttributeError):
                return None
            _sid, key = marker_of(item.get("metadata"))
            return key
    return None


def check_target_uri(target: str) -> None:
    if not is_endpoint(target):
        raise BadInput(f"--target {target}: not an endpoint URI; use local:PATH or https://HOST")


def target_identity(target: str, *, key_env: str) -> dict[str, Any]:
    check_target_uri(target)
    return endpoint_identity(target, key_env)


def open_target(target: str, *, key_env: str, create: bool = True) -> Any:
    """The target's API. ``create=False`` (verify) refuses a ``local:`` store that does not exist."""
    check_target_uri(target)
    return open_endpoint(target, key_env=key_env, create=create)


@dataclass
class Frozen:
    """A frozen source: a snapshot directory the plan (and verification) read from."""

    path: Path
    identity: dict[str, Any] = field(default_factory=dict)

    def memories(self) -> Iterator[dict[str, Any]]:
        """Dump-form memories, exactly as the source holds them (the snapshot reader rebuilds them)."""
        from longmem_etl.snapshots import open_snapshot

        snap = open_snapshot(self.path)
        for batch in snap.iter_dump_memories(batch_size=READ_BATCH):
            yield from batch

    def collection_defs(self) -> dict[str, Any]:
        """Collection name -> its dump value (string or object), for ``import_memories(collections=)``."""
        import pyarrow.parquet as pq  # here, not at import: see `freeze`'s callers' start-up

        from longmem_etl.snapshots import open_snapshot

        path = open_snapshot(self.path, verify=False).collections_path  # decrypted if encrypted
        if not path.is_file():
            return {}
        out: dict[str, Any] = {}
        for row in pq.read_table(path).to_pylist():
            if row.get("name"):
                out[row["name"]] = json.loads(row["raw"])
        return out


def _only_snapshot_under(root: Path) -> Path:
    found = sorted(p.parent for p in root.rglob("manifest.json"))
    if len(found) != 1:
        raise RuntimeError(f"{root}: expected one snapshot, found {len(found)}")
    return found[0]


def _as_path(result: Any) -> Path:
    """Snapshot-producing calls return a path or an object with ``path``/``snapshot``."""
    for attr in ("path", "snapshot", "snapshot_path", "output"):
        value = getattr(result, attr, None)
        if value is not None and not callable(value):
            return Path(value)
    if isinstance(result, dict):
        for key in ("path", "snapshot", "snapshot_path", "output"):
            if result.get(key):
                return Path(result[key])
    return Path(result)


def freezes_in_rows(source: str, spec: str | None) -> bool:
    """True when `freeze` can hand over the frozen rows while it freezes (``on_rows``): a dump
    file converted without a spec (a spec cleans the whole snapshot after the freeze; a snapshot
    directory needs no freeze; an endpoint is backed up first)."""
    return spec is None and classify_source(source) == "dump"


def freeze(
    source: str,
    dest: Path,
    *,
    spec: str | None,
    key_env: str,
    identity: dict[str, Any] | None = None,
    on_rows: Callable[[Any], None] | None = None,
) -> Frozen:
    """Freeze ``source`` under ``dest`` (replacing any half-made earlier attempt); apply ``spec``.

    ``identity``: the source's `source_identity` when the caller has it (a dump's sha256 is not
    computed twice). ``on_rows(batch)`` (only where `freezes_in_rows`): every accepted row, in
    the frozen snapshot's order, while the conversion runs; the snapshot is committed after the
    last one."""
    kind = classify_source(source)
    if on_rows is not None and not freezes_in_rows(source, spec):
        raise ValueError("on_rows: only a dump file frozen without a spec hands over its rows")
    if identity is None:
        identity = source_identity(source, key_env=key_env)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if kind == "endpoint":
        from longmem_etl.backup import backup

        snap = _as_path(backup(source, root=dest / "source", key_env=key_env))
    elif kind == "dump":
        from longmem_etl.snapshots import convert_dump

        path = Path(source)
        opened = take_opened(path)
        if is_dead_letter_file(path):
            path, opened = dead_letters_to_dump(path, dest / "replay.json"), None
        in_rows = on_rows is not None
        snap = _as_path(
            convert_dump(
                path,
                dest / "source",
                progress=False,
                on_rows=on_rows,
                # rows handed over sooner (the first calls wait for the first batch); and with
                # the upload running beside it the freeze only has to keep ahead of the API:
                # worker processes would cost their start-up before the first row (and cores)
                batch_size=ROWS_BATCH if in_rows else DEFAULT_BATCH,
                first_batch=FIRST_ROWS if in_rows else None,
                parallel=not in_rows,
                opened=opened if in_rows else None,  # read with these batch sizes
                digest=_digest_dict(path),
            )
        )
    else:
        snap = Path(source).expanduser().resolve()
    if spec:
        from longmem_etl.transforms.run import clean_snapshot

        snap = _as_path(clean_snapshot(snap, spec, dest / "cleaned"))
    return Frozen(path=snap, identity=identity)


def _digest_dict(path: Path) -> Any:
    """`convert_dump`'s ``digest``: the file's `dump_digest` as ``{"sha256", "bytes"}`` (``{}``
    when it cannot be read: the reader says why)."""

    def digest() -> dict[str, Any]:
        try:
            sha, size = dump_digest(path)
        except OSError:
            return {}
        return {"sha256": sha, "bytes": size}

    return digest


DEAD_LETTER_KEYS = frozenset({"source_id", "item", "status", "message"})


def is_dead_letter_file(path: Path) -> bool:
    """A migration's ``dead_letter.jsonl`` (first line has source_id/item/status/message)."""
    if not path.name.lower().endswith(".jsonl"):
        return False
    with open(path, "rb") as fh:
        first = fh.readline()
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and set(row) >= DEAD_LETTER_KEYS


def dead_letters_to_dump(path: Path, out: Path) -> Path:
    """Replay support: ``migrate --source dead_letter.jsonl`` (after fixing the items in it) sends
    them again. Each line's ``item`` becomes a memory with its original id and collection."""
    memories = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = dict(row["item"])
        except (ValueError, KeyError, TypeError):
            raise BadInput(f"{path}: line {n}: not a dead-letter record") from None
        item.setdefault("id", row["source_id"])
        item.setdefault("collection", row.get("collection") or "default")
        memories.append(item)
    out.write_text(json.dumps({"tenant": "dead-letters", "memories": memories}, ensure_ascii=False))
    return out


@contextmanager
def frozen_temporarily(source: str, *, spec: str | None, key_env: str) -> Iterator[Frozen]:
    """Freeze into a temporary directory that is removed afterwards (for `--dry-run` and `verify`)."""
    with tempfile.TemporaryDirectory(prefix="longmem-etl-") as tmp:
        yield freeze(source, Path(tmp) / "frozen", spec=spec, key_env=key_env)

"""``SnapshotWriter``: the one way a snapshot is written, atomically.

Everything goes into ``ROOT/.tmp-XXXX/`` first; on a clean exit the Parquet files are closed, their
sha256 computed, ``manifest.json`` written last, and the directory renamed into
``ROOT/tenant=T/snapshot=TS/`` (one ``rename``, so readers see all of it or nothing). On any error the
temp dir is removed. A directory without a manifest is never a snapshot.

The commit runs under the tenant's lock (``layout.tenant_lock``); an increment's, from choosing its
parent on, so ``forget`` (which takes the same lock per tenant) cannot remove that parent meanwhile. When the source names a file
``sha256`` (a converted dump) and a snapshot of the same tenant already records that sha256, nothing
new is committed: ``already_present`` is set and ``path`` is the existing snapshot. So converting one
dump twice gives one snapshot, and two different dumps with the same ``exported_at`` get two (the
second takes the next free second).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longmem_etl import __version__, jsonio
from longmem_etl.arrays import int64s, strings
from longmem_etl.errors import environment_problem
from longmem_etl.names import collection_name
from longmem_etl.schema import (
    COLLECTIONS_SCHEMA,
    FORMAT_VERSION,
    MEMORIES_SCHEMA,
    REJECTED_SCHEMA,
)
from longmem_etl.snapshots.layout import (
    check_tenant,
    list_snapshots,
    next_free_snapshot_dir,
    snapshot_name,
    snapshot_time,
    tenant_dir,
    tenant_lock,
)
from longmem_etl.snapshots.manifest import RESERVED_KEYS, file_digest, read_manifest, write_manifest
from longmem_etl.snapshots.temps import Owner, clean_stale_temps, new_owned_dir

PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1}
# Dictionary encoding and min/max statistics only where they pay: low-cardinality and filterable
# columns. On text/metadata/extra they cost time and save nothing (measured: ~25% faster writes).
_LOW_CARDINALITY = ["collection", "category", "source", "container_tag", "pinned", "archived"]
MEMORIES_PARQUET_OPTIONS: dict[str, Any] = {
    **PARQUET_OPTIONS,
    "use_dictionary": _LOW_CARDINALITY,
    "write_statistics": _LOW_CARDINALITY + ["importance", "created_at", "updated_at", "expires_at"],
}


def conform(data: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """``data`` with exactly ``schema``'s columns in order (missing nullable ones as NULL), cast."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    if table.schema.equals(schema):
        return table
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if not col.type.equals(field.type):
                col = col.cast(field.type)
            cols.append(col)
        elif field.nullable:
            cols.append(pa.nulls(table.num_rows, field.type))
        else:
            raise ValueError(f"missing required column {field.name!r}")
    return pa.Table.from_arrays(cols, schema=schema)


def collections_table(collections: list[Any] | None) -> pa.Table:
    """collections.parquet rows: position, a name for SQL, and the exact JSON of each entry."""
    names: list[str | None] = []
    raws: list[str] = []
    for item in collections or []:
        names.append(collection_name(item))
        raws.append(jsonio.dumps_str(item))
    columns = [int64s(np.arange(len(raws))), strings(names), strings(raws)]
    return pa.Table.from_arrays(columns, schema=COLLECTIONS_SCHEMA)


class FullSink:
    """Writes a full snapshot's memory rows: ``memories.parquet`` and, row for row,
    ``memory_hashes.parquet`` (each row's content digest, ``snapshots/rowhash.py``), so the
    snapshot can later be a parent without its content being read again."""

    def __init__(self, directory: Path, con: Any) -> None:
        from longmem_etl.snapshots.rowhash import HASHES, HASHES_OPTIONS, HASHES_SCHEMA

        self.con = con
        self._mem = pq.ParquetWriter(
            directory / "memories.parquet", MEMORIES_SCHEMA, **MEMORIES_PARQUET_OPTIONS
        )
        self._hashes = pq.ParquetWriter(directory / HASHES, HASHES_SCHEMA, **HASHES_OPTIONS)

    def write(self, table: pa.Table) -> None:
        from longmem_etl.snapshots.rowhash import digests, hashes_table

        md5 = digests(self.con, table)
        self._mem.write_table(table)
        self._hashes.write_table(hashes_table(md5))

    def abort(self) -> None:
        self.finish()

    def finish(self) -> None:
        """Close both files; a full snapshot has no ``incremental`` entry (None)."""
        for w in (self._mem, self._hashes):
            w.close()


class SnapshotWriter:
    """Context manager writing one snapshot; ``.path`` is the committed dir after a clean exit.

    ``source`` describes where the data came from (never secrets); ``parent`` is the snapshot this
    one derives from (a transform's input, the previous backup); ``extra_manifest`` entries are added
    to the manifest's top level (they may not replace the standard keys). ``exported_at`` defaults to
    the dump header's ``exported_at`` when it is a string, else the commit time. ``tenant`` is kept
    exactly (``layout.check_tenant``). ``in_order``: the snapshot is of the present (a backup,
    a derived snapshot), so its name must sort after the tenant's newest one even when that one
    took a later second than its own (same-second commits); False for a dump's ``exported_at``,
    which may legitimately be older. ``named_at``: the instant the snapshot is named after (the
    export time); default the commit time. With
    ``recipients`` (``crypto.parse_recipients``) every file is age-encrypted at commit and the
    committed ``manifest.json`` is the public one (``snapshots/crypto.py``). With ``incremental``
    (``snapshots.incremental.Incremental``) the commit stores only the changes against the tenant's
    newest verified snapshot when that pays (``snapshots/incremental.py``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        tenant: str,
        *,
        source: dict[str, Any],
        parent: str | os.PathLike | None = None,
        extra_manifest: dict[str, Any] | None = None,
        exported_at: str | None = None,
        recipients: list[Any] | None = None,
        incremental: Any = None,
        named_at: datetime | None = None,
        in_order: bool = True,
        source_digest: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        clash = RESERVED_KEYS & set(extra_manifest or {})
        if clash:
            raise ValueError(f"extra_manifest may not set {sorted(clash)}")
        self.root = Path(root)
        self.tenant = check_tenant(tenant)
        self.named_at = named_at
        self.in_order = in_order
        self.already_present = False
        self.source = dict(source)
        # ``{"sha256", "bytes"}`` of the source file, still being hashed: merged into ``source``
        # at commit, before the already-present check (see `convert.convert_dump`)
        self._source_digest = source_digest
        self.parent = str(parent) if parent is not None else None
        self.extra_manifest = dict(extra_manifest or {})
        self.exported_at = exported_at
        self.recipients = list(recipients or [])  # pyrage recipients: encrypt at commit when set
        self.incremental = incremental  # an incremental.Incremental: try an increment at commit
        self.path: Path | None = None
        self.manifest: dict[str, Any] | None = None
        self.counts = {"memories": 0, "collections": 0, "rejected": 0}
        self._tmp: Path | None = None
        self._sink: Any = None  # FullSink or incremental.IncrementSink, opened at the first rows
        self._con: Any = None  # the DuckDB connection the sink hashes rows on
        self._parent_lock: contextlib.ExitStack | None = None  # the tenant's, while an increment
        self._rej_writer: pq.ParquetWriter | None = None
        self._collections: list[Any] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._header: dict[str, Any] = {}
        self._owner: Owner | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> SnapshotWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.root)  # what killed writers left here
        # the held lock tells the next writer on this root whether our leftovers are a killed run's
        self._tmp, self._owner = new_owned_dir(self.root)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        where = str(self._tmp or self.root)
        if exc_type is not None:
            self._abort()
            if isinstance(exc, Exception) and (problem := environment_problem(exc, where)):
                raise problem from None  # disk full / file size limit: exit 2 naming the path
            return False
        try:
            self._commit()
        except BaseException as failure:
            self._abort()
            if isinstance(failure, Exception) and (problem := environment_problem(failure, where)):
                raise problem from None
            raise
        return False

    @property
    def temp_path(self) -> Path | None:
        """The temp dir being written (None outside the ``with`` block)."""
        return self._tmp

    # -- data --------------------------------------------------------------------------------------

    def write_memories(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append memory rows (any column order; missing ``extra``/``fidelity`` become NULL)."""
        table = conform(data, MEMORIES_SCHEMA)
        if self._sink is None:
            self._sink = self._open_sink()
        if table.num_rows:
            # Hashing (DuckDB) and Parquet encoding release the GIL: let them overlap with
            # building the next batch. At most one write is in flight, so memory stays at about
            # two batches.
            self._wait_pending()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet")
            self._pending = self._pool.submit(self._sink.write, table)
        self.counts["memories"] += table.num_rows

    def _open_sink(self) -> Any:
        """An ``IncrementSink`` when an increment against the tenant's newest verified snapshot
        may pay (``incremental.pick_parent``), else a ``FullSink``."""
        import duckdb

        tmp = self._require_tmp()
        self._con = duckdb.connect()  # digests do not depend on the time zone (epoch_us)
        if self.incremental is not None and tenant_dir(self.root, self.tenant).is_dir():
            from longmem_etl.snapshots.incremental import IncrementSink, pick_parent

            # an increment holds the tenant's lock from choosing its parent to the rename:
            # `forget` takes the same lock, so it cannot remove the parent in between (a broken
            # chain); another writer of the tenant waits, then chains onto this snapshot
            self._parent_lock = contextlib.ExitStack()
            self._parent_lock.enter_context(tenant_lock(self.root, self.tenant))

            # the parent is named before this snapshot whatever name it ends up with
            when = self._name_time(self.named_at or datetime.now(timezone.utc))
            upto = next_free_snapshot_dir(self.root, self.tenant, when)
            picked = pick_parent(
                self.root, self.tenant, self.incremental, bool(self.recipients), upto.name
            )
            if picked is not None:
                return IncrementSink(tmp, *picked, self._con)
            self._release_parent_lock()  # a full snapshot: no parent to keep
        return FullSink(tmp, self._con)

    def _wait_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def write_rejected(self, data: pa.Table | pa.RecordBatch) -> None:
        """Append rejected rows (``rejected.parquet`` exists only if at least one row was written)."""
        table = conform(data, REJECTED_SCHEMA)
        if not table.num_rows:
            return
        if self._rej_writer is None:
            self._rej_writer = pq.ParquetWriter(
                self._require_tmp() / "rejected.parquet", REJECTED_SCHEMA, **PARQUET_OPTIONS
            )
        self._rej_writer.write_table(table)
        self.counts["rejected"] += table.num_rows

    def set_collections(self, collections: list[Any] | None) -> None:
        """The dump's ``collections`` list (None: the dump had no ``collections`` key)."""
        self._collections = None if collections is None else list(collections)

    def set_header(self, header: dict[str, Any]) -> None:
        """Top-level dump keys other than memories/collections (tenant, format_version, ...)."""
        self._header = {k: v for k, v in header.items() if k not in ("memories", "collections")}

    # -- commit ------------------------------------------------------------------------------------

    def _require_tmp(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("SnapshotWriter must be used as a context manager")
        return self._tmp

    def _close_writers(self) -> None:
        try:
            self._wait_pending()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        if self._rej_writer is not None:
            self._rej_writer.close()
        self._rej_writer = None

    def _commit(self) -> None:
        if self._sink is None:
            self.write_memories(MEMORIES_SCHEMA.empty_table())  # opens the sink (and the lock)
        try:
            self._commit_as(locked=self._parent_lock is not None)
        finally:
            self._release_parent_lock()

    def _release_parent_lock(self) -> None:
        lock, self._parent_lock = self._parent_lock, None
        if lock is not None:
            lock.close()

    def _commit_as(self, *, locked: bool) -> None:
        """The commit; ``locked``: the caller already holds the tenant's lock."""
        tmp = self._require_tmp()
        from longmem_etl.snapshots.rowhash import HASHES, manifest_entry

        if self._sink is None:
            self.write_memories(MEMORIES_SCHEMA.empty_table())
        if self._source_digest is not None:
            self.source.update(self._source_digest())
            self._source_digest = None
        self._close_writers()
        coll = collections_table(self._collections)
        pq.write_table(coll, tmp / "collections.parquet", **PARQUET_OPTIONS)
        self.counts["collections"] = coll.num_rows
        sink, self._sink = self._sink, None
        try:
            increment = sink.finish()  # an increment's manifest entry, or None: a full snapshot
        finally:
            self._close_con()
        files = {}
        for name in (
            "memories.parquet",
            "changed_memories.parquet",
            "removed_ids.parquet",
            HASHES,
            "collections.parquet",
            "rejected.parquet",
        ):
            if (tmp / name).exists():
                digest, size = file_digest(tmp / name)
                files[name] = {"sha256": digest, "bytes": size}
        now = datetime.now(timezone.utc)
        exported_at = self.exported_at
        if exported_at is None and isinstance(self._header.get("exported_at"), str):
            exported_at = self._header["exported_at"]
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "tool": {"name": "longmem-etl", "version": __version__},
            "tenant": self.tenant,
            "snapshot": "",
            "created_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "exported_at": exported_at or now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "source": self.source,
            "parent": self.parent,
            "counts": dict(self.counts),
            "files": files,
            "dump_header": self._header,
            "has_collections": self._collections is not None,
        }
        if increment is not None:
            manifest["incremental"] = increment
        manifest["row_hashes"] = manifest_entry()
        manifest.update(self.extra_manifest)
        if self._owner is not None:  # the committed dir holds only the snapshot's files
            self._owner.release()
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; a snapshot is an ordinary directory
        with contextlib.nullcontext() if locked else tenant_lock(self.root, self.tenant):
            existing = same_source_snapshot(self.root, self.tenant, self.source)
            if existing is not None:
                self._abort()
                self.path = existing
                self.manifest = read_manifest(existing)
                self.already_present = True
                return
            when = self._name_time(self.named_at or now)
            final = next_free_snapshot_dir(self.root, self.tenant, when)
            manifest["snapshot"] = final.name
            if self.recipients:  # encrypted once named: the sealed full manifest carries the name
                from longmem_etl.snapshots.crypto import seal_dir

                manifest = seal_dir(tmp, manifest, self.recipients)
            write_manifest(tmp, manifest)
            while True:
                try:
                    os.rename(tmp, final)
                    break
                except OSError:
                    if not final.exists():
                        raise
                    # an older version (no lock) committed the same second meanwhile: next one
                    final = next_free_snapshot_dir(self.root, self.tenant, when)
                    manifest["snapshot"] = final.name
                    write_manifest(tmp, manifest)
        self._tmp = None
        self.path = final
        self.manifest = manifest

    def _name_time(self, when: datetime) -> datetime:
        """``when``, or one second after the tenant's newest snapshot when ``in_order`` and that
        one is named at or up to a minute after ``when`` (a same-second commit moved it forward;
        further ahead is clock skew, which is not followed)."""
        if not self.in_order:
            return when
        snaps = list_snapshots(self.root, self.tenant)
        newest = snapshot_time(snaps[-1]) if snaps else None
        start = when.astimezone(timezone.utc).replace(microsecond=0)
        if newest is not None and start <= newest <= start + timedelta(minutes=1):
            return newest + timedelta(seconds=1)
        return when

    def _close_con(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _abort(self) -> None:
        with contextlib.suppress(Exception):  # cleaning up after an error already raised
            self._close_writers()
        with contextlib.suppress(Exception):
            if self._sink is not None:
                sink, self._sink = self._sink, None
                sink.abort()
        with contextlib.suppress(Exception):
            self._close_con()
        self._release_parent_lock()
        if self._owner is not None:
            self._owner.release()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def same_source_snapshot(
    root: str | os.PathLike, tenant: str, source: dict[str, Any]
) -> Path | None:
    """A committed snapshot of exactly ``tenant`` whose manifest's source records the same file
    content (``source.sha256``, with the same ``kind``), else None (always None without one)."""
    digest = source.get("sha256")
    if not isinstance(digest, str) or not digest:
        return None
    for snap in reversed(list_snapshots(root, tenant)):
        try:
            theirs = read_manifest(snap).get("source") or {}
        except Exception:  # noqa: BLE001 - a damaged manifest is `check`'s business, not ours
            continue
        if (
            isinstance(theirs, dict)
            and theirs.get("sha256") == digest
            and theirs.get("kind") == source.get("kind")
        ):
            return snap
    return None


__all__ = [
    "FullSink",
    "SnapshotWriter",
    "collections_table",
    "conform",
    "same_source_snapshot",
    "snapshot_name",
]

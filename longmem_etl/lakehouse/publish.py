"""``publish``: keep Iceberg tables in step with a snapshot root, one append per snapshot and table.

Every committed longmem snapshot under the root that a table does not hold yet becomes ONE Iceberg
append to each of ``NS.memories``, ``NS.collections`` and ``NS.rejected`` (an empty append when the
snapshot has no such rows, so each table's history has one Iceberg snapshot per longmem snapshot).
The rows are the snapshot's *full state*: an increment is read as its chain's state and an
encrypted snapshot through its decrypted copy (``snapshots.reader.open_snapshot``), after the same
integrity checks every reader runs.

**The table is the journal.** Each append carries summary properties ``longmem.tenant``,
``longmem.snapshot`` (and ``longmem.manifest-sha256``, ``longmem-etl.version``), committed
atomically with its data files. What a table holds is read back from those summaries, plus the
``(tenant, snapshot)`` of its live data files (exact column bounds, see ``tables``), which still
answer after old Iceberg snapshots were expired. So there is no side file to lose:

- a re-run appends nothing;
- a run killed between two tables' appends (Iceberg has no multi-table commit) is resumed table
  by table: only the tables that lack the snapshot get it;
- two runs at once: an append is an optimistic commit against the table's current snapshot; the
  loser gets ``CommitFailedException``, re-reads the table, and skips the snapshot if the winner
  appended it (else retries with back-off). A SQLite catalog's "database is locked" is retried
  the same way.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longmem_etl.errors import BadInput
from longmem_etl.lakehouse.catalog import open_catalog, safe_uri, warehouse_location
from longmem_etl.lakehouse.tables import TABLES, ensure_tables, to_iceberg_arrow

DEFAULT_NAMESPACE = "longmem"
TENANT_KEY = "longmem.tenant"
SNAPSHOT_KEY = "longmem.snapshot"
MANIFEST_KEY = "longmem.manifest-sha256"
VERSION_KEY = "longmem-etl.version"
MAX_ATTEMPTS = 20
SNAPSHOT_FIELD_ID = 2  # the ``snapshot`` column (``tables.iceberg_schema``)

Key = tuple[str, str]  # (tenant, snapshot name without "snapshot=")


@dataclass
class Appended:
    """One longmem snapshot published: rows per table, and the tables this run appended to (a
    resumed snapshot lists only the ones an earlier, interrupted run had not reached)."""

    tenant: str
    snapshot: str
    path: str
    rows: dict[str, int]
    tables: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "snapshot": self.snapshot,
            "path": self.path,
            "rows": self.rows,
            "tables": self.tables,
        }


@dataclass
class PublishResult:
    catalog: str
    warehouse: str
    namespace: str
    snapshots: int = 0  # longmem snapshots considered
    appended: list[Appended] = field(default_factory=list)
    already: int = 0  # of them, already in every table
    # already published, but the snapshot's manifest is not the one published (replaced in the
    # root since): left alone, reported
    changed: list[dict[str, str]] = field(default_factory=list)
    iceberg_snapshots: dict[str, int | None] = field(default_factory=dict)

    @property
    def tables(self) -> list[str]:
        return [f"{self.namespace}.{t}" for t in TABLES]

    @property
    def rows(self) -> dict[str, int]:
        """Rows this run appended, per table."""
        out = dict.fromkeys(TABLES, 0)
        for a in self.appended:
            for t in a.tables:
                out[t] += a.rows.get(t, 0)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog,
            "warehouse": self.warehouse,
            "namespace": self.namespace,
            "tables": self.tables,
            "snapshots": self.snapshots,
            "already_published": self.already,
            "appended": [a.to_json() for a in self.appended],
            "rows_appended": self.rows,
            "changed_since_published": self.changed,
            "current_iceberg_snapshot": self.iceberg_snapshots,
        }

    def render(self) -> str:
        lines = [
            f"published {a.tenant} {a.snapshot}: "
            + ", ".join(f"{a.rows.get(t, 0)} {t}" for t in TABLES)
            + ("" if len(a.tables) == len(TABLES) else f" (resumed: {', '.join(a.tables)})")
            for a in self.appended
        ]
        lines.extend(
            f"note: {c['tenant']} {c['snapshot']}: its manifest changed since it was published; "
            "not published again (delete its rows from the tables to republish it)"
            for c in self.changed
        )
        lines.append(
            f"{len(self.appended)} snapshot(s) appended to {', '.join(self.tables)} "
            f"({self.already} already published) in {self.catalog}"
        )
        return "\n".join(lines)


def published(table: Any, wanted: set[Key] | None = None) -> set[Key]:
    """The ``(tenant, snapshot)`` pairs ``table`` already holds: from its snapshots' summaries
    (the journal) and from its live data files' partition + exact ``snapshot`` bounds (which
    survive ``expire_snapshots``). The data files are read only when the summaries do not already
    hold every ``wanted`` pair (so a re-run with nothing new reads no manifest files)."""
    keys: set[Key] = set()
    for snap in table.metadata.snapshots:
        props = snap.summary.additional_properties if snap.summary else {}
        tenant, name = props.get(TENANT_KEY), props.get(SNAPSHOT_KEY)
        if tenant is not None and name is not None:
            keys.add((tenant, name))
    current = table.current_snapshot()
    if current is None or (wanted is not None and wanted <= keys):
        return keys
    for manifest in current.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            f = entry.data_file
            tenant = f.partition[0] if len(f.partition) else None
            low = (f.lower_bounds or {}).get(SNAPSHOT_FIELD_ID)
            high = (f.upper_bounds or {}).get(SNAPSHOT_FIELD_ID)
            if isinstance(tenant, str) and low is not None and low == high:
                keys.add((tenant, bytes(low).decode("utf-8", "replace")))
    return keys


def published_manifests(table: Any) -> dict[Key, str]:
    """``(tenant, snapshot) -> manifest sha256`` recorded by the appends still in ``table``'s
    history."""
    out: dict[Key, str] = {}
    for snap in table.metadata.snapshots:
        props = snap.summary.additional_properties if snap.summary else {}
        tenant, name = props.get(TENANT_KEY), props.get(SNAPSHOT_KEY)
        if tenant is not None and name is not None and props.get(MANIFEST_KEY):
            out[(tenant, name)] = props[MANIFEST_KEY]
    return out


def _is_retryable(exc: Exception) -> bool:
    from pyiceberg.exceptions import CommitFailedException

    if isinstance(exc, CommitFailedException):
        return True
    text = str(exc).lower()
    return "database is locked" in text or "could not serialize" in text


def _append(
    table: Any, name: str, data: Any, key: Key, props: dict[str, str], held: set[Key]
) -> bool:
    """Append ``data`` to ``table`` unless it already holds ``key``; True if this call appended.
    On a commit conflict the table is re-read: a concurrent publish may have appended ``key``."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            table.append(data, snapshot_properties=props)
            return True
        except Exception as exc:
            if not _is_retryable(exc) or attempt == MAX_ATTEMPTS - 1:
                raise
        time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
        table.refresh()
        held |= published(table)
        if key in held:
            return False
    raise AssertionError("unreachable")


def _read_tables(path: Path) -> tuple[Any, dict[str, Any]]:
    """The snapshot (full state, verified) and its three tables as Arrow."""
    import pyarrow.parquet as pq

    from longmem_etl.schema import COLLECTIONS_SCHEMA
    from longmem_etl.snapshots.reader import open_snapshot

    snap = open_snapshot(path)
    coll = snap.collections_path
    data = {
        "memories": snap.read_memories(),
        "collections": pq.read_table(coll) if coll.exists() else COLLECTIONS_SCHEMA.empty_table(),
        "rejected": snap.read_rejected(),
    }
    if data["rejected"] is None:
        data["rejected"] = TABLES["rejected"].empty_table()
    return snap, data


def publish(
    root: str | os.PathLike,
    catalog: str,
    warehouse: str,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    tenant: str | None = None,
    on_append: Callable[[str, Key], None] | None = None,
) -> PublishResult:
    """Append every snapshot under ``root`` (of ``tenant`` only, when given) that the tables do
    not hold yet; see the module doc. ``on_append(table, key)`` is called after each commit.

    An ``s3://`` root is read through the same staging as every other verb (its committed
    snapshots mirrored into a private temp dir); paths in the result name the ``s3://`` URLs."""
    from longmem_etl.errors import LongmemETLError, environment_problem
    from longmem_etl.storage.staging import remote_paths, staged

    with staged(root, tenant=tenant) as (local, _):
        assert local is not None
        try:
            return remote_paths(
                _publish_local(
                    local,
                    catalog,
                    warehouse,
                    namespace=namespace,
                    tenant=tenant,
                    on_append=on_append,
                )
            )
        except LongmemETLError:
            raise
        except Exception as exc:  # a full disk under the warehouse: exit 2 naming it, not '?'
            problem = environment_problem(exc, f"--warehouse {warehouse_location(warehouse)}")
            if problem is not None:
                raise problem from None
            raise


def _publish_local(
    root: str | os.PathLike,
    catalog: str,
    warehouse: str,
    *,
    namespace: str,
    tenant: str | None,
    on_append: Callable[[str, Key], None] | None,
) -> PublishResult:
    """`publish` over a local root."""
    from longmem_etl import __version__
    from longmem_etl.progress import progress
    from longmem_etl.snapshots.layout import list_snapshots, snapshot_tenant
    from longmem_etl.snapshots.manifest import read_manifest

    _check_namespace(namespace)
    if "://" not in str(root) and not Path(root).is_dir():
        raise BadInput(f"--root {root}: no such directory")
    result = PublishResult(
        catalog=safe_uri(catalog), warehouse=warehouse_location(warehouse), namespace=namespace
    )
    found: list[tuple[Path, Key, dict[str, Any]]] = []
    for path in list_snapshots(root, tenant):
        manifest = read_manifest(path)
        found.append(
            (path, (snapshot_tenant(path, manifest), path.name.split("=", 1)[1]), manifest)
        )
    cat = open_catalog(catalog, warehouse)
    tables = ensure_tables(cat, namespace)
    wanted = {key for _, key, _ in found}
    held = {name: published(t, wanted) for name, t in tables.items()}

    shas = published_manifests(tables["memories"])
    todo: list[tuple[Path, Key]] = []
    for path, key, manifest in found:
        result.snapshots += 1
        if all(key in held[name] for name in TABLES):
            result.already += 1
            sha = manifest.get("manifest_sha256")
            if key in shas and sha and shas[key] != sha:
                result.changed.append({"tenant": key[0], "snapshot": key[1], "path": str(path)})
        else:
            todo.append((path, key))

    bar = progress(len(todo), desc="publish", unit="snapshot")
    try:
        for path, key in todo:
            snap, data = _read_tables(path)
            props = {
                TENANT_KEY: key[0],
                SNAPSHOT_KEY: key[1],
                MANIFEST_KEY: str(read_manifest(path).get("manifest_sha256") or ""),
                VERSION_KEY: __version__,
            }
            done: list[str] = []
            for name, table in tables.items():
                if key in held[name]:
                    continue
                rows = to_iceberg_arrow(name, data[name], key[0], key[1])
                if _append(table, name, rows, key, props, held[name]):
                    done.append(name)
                    if on_append is not None:
                        on_append(name, key)
                held[name].add(key)
            if done:
                result.appended.append(
                    Appended(
                        tenant=key[0],
                        snapshot=key[1],
                        path=str(path),
                        rows={n: data[n].num_rows for n in TABLES},
                        tables=done,
                    )
                )
            else:
                result.already += 1
            del snap, data
            bar.update(1)
    finally:
        bar.close()
    for name, table in tables.items():
        current = table.current_snapshot()
        result.iceberg_snapshots[name] = current.snapshot_id if current else None
    return result


def _check_namespace(namespace: str) -> None:
    """A namespace is one or more dot-separated identifiers (letters, digits, ``_``)."""
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", namespace or ""):
        raise BadInput(
            f"--namespace {namespace!r}: use letters, digits and _ (dots separate levels)"
        )

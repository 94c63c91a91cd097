"""Incremental snapshots: store only what changed against the tenant's previous snapshot.

A *full* snapshot has ``memories.parquet``. An *increment* has instead

- ``changed_memories.parquet``: rows added or changed since its parent (the memories schema plus
  ``_seq``, the row's place in the account's order), and
- ``removed_ids.parquet``: the ids its parent had and it has not (tombstones),

plus its own ``collections.parquet`` / ``rejected.parquet`` (small, stored whole) and
``manifest.incremental`` = {parent, base, depth, changed_rows, removed_ids}. Nothing named
``memories.parquet`` is in an increment, so pandas/polars/Spark pointed at the folder cannot take it
for a full state.

Changes are found by comparing each memory's whole content with its parent's (every column, exactly,
in one DuckDB join; no hash that could collide), never by the API's timestamps. Order is kept exactly: a full snapshot's row ``i`` has ``_seq = i``; an
increment keeps the parent's ``_seq`` for rows still in the same relative order and gives rows added
or moved a ``_seq`` between their neighbours (a moved row is stored like a changed one).

``state_sql(path)`` is the one definition of a snapshot's full state: the chain's base plus each
increment's rows, minus every row a later layer replaces or tombstones (an anti join), ordered by
``_seq``. ``state_dir(path)`` materialises it (with decryption) into a private temp dir laid out like
a plain full snapshot, which every file-based reader uses; it is removed at exit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longmem_etl.errors import BadInput
from longmem_etl.sqlquote import sql_str

CHANGES = "changed_memories.parquet"
TOMBSTONES = "removed_ids.parquet"
DEFAULT_FULL_EVERY = 7
MAX_CHAIN = 1000
# An increment holding more than this share of the state is written as a full snapshot instead.
MAX_CHANGED_SHARE = 0.5

_states: dict[tuple[str, str], Path] = {}


@dataclass(frozen=True)
class Incremental:
    """How a writer chooses: ``full`` forces a full snapshot; else an increment against the tenant's
    newest verified snapshot unless its chain already has ``full_every`` increments."""

    full: bool = False
    full_every: int = DEFAULT_FULL_EVERY

    def __post_init__(self) -> None:
        if self.full_every < 1:
            raise BadInput(f"--full-every must be at least 1 (got {self.full_every})")


def is_increment(manifest: dict[str, Any]) -> bool:
    return isinstance(manifest.get("incremental"), dict)


def chain(path: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """``[(dir, manifest)]`` from the full base to ``path``; BadInput when a link is missing."""
    from longmem_etl.snapshots.manifest import read_manifest

    p = Path(path)
    out = [(p, read_manifest(p))]
    while is_increment(out[-1][1]):
        if len(out) > MAX_CHAIN:
            raise BadInput(f"{p}: chain longer than {MAX_CHAIN} (a cycle?)")
        parent_name = out[-1][1]["incremental"].get("parent")
        if not isinstance(parent_name, str) or "/" in parent_name or parent_name in (".", ".."):
            raise BadInput(f"{out[-1][0]}: bad incremental parent {parent_name!r}")
        parent = out[-1][0].parent / parent_name
        try:
            out.append((parent, read_manifest(parent)))
        except BadInput:
            raise BadInput(
                f"{p}: chain broken: parent {parent_name} of {out[-1][0].name} is missing"
            ) from None
        # the parent it was written against, not another snapshot under the same name (a root
        # restored or merged from another copy): its manifest checksum, or the one it had before
        # a rebase (which keeps the state)
        from longmem_etl.snapshots.integrity import is_recorded_parent

        if not is_recorded_parent(out[-2][1]["incremental"], out[-1][1]):
            raise BadInput(
                f"{p}: chain broken: parent {parent_name} of {out[-2][0].name} is not the snapshot "
                "it was written against (its manifest differs: replaced or restored from elsewhere)"
            )
    out.reverse()
    return out


def verify_chain(path: str | os.PathLike, *, checksums: bool = True) -> list[Path]:
    """Every snapshot of ``path``'s chain exists with intact files; the chain (base first)."""
    from longmem_etl.snapshots.integrity import verify_at_open

    verify_at_open(path, checksums=checksums)  # the snapshot and every link of its chain
    return [d for d, _ in chain(path)]


def _cols() -> list[str]:
    from longmem_etl.schema import MEMORIES_SCHEMA

    return [f.name for f in MEMORIES_SCHEMA]


def state_sql(path: str | os.PathLike) -> tuple[str, list[Path]]:
    """``(SELECT of the full state with a _seq column, files it reads)`` for any snapshot.

    Encrypted layers are read from their decrypted copies (``crypto.plain_dir``).
    """
    from longmem_etl.snapshots.crypto import plain_dir

    cols = ", ".join(f'"{c}"' for c in _cols())
    links = chain(path)
    layers, masks, files = [], [], []
    for k, (d, m) in enumerate(links):
        plain = plain_dir(d, m)
        if k == 0:
            f = plain / "memories.parquet"
            layers.append(
                f"SELECT {cols}, CAST(file_row_number AS DOUBLE) AS _seq, 0 AS _layer "
                f"FROM read_parquet({sql_str(f)}, file_row_number = true)"
            )
            files.append(f)
            continue
        ch, tb = plain / CHANGES, plain / TOMBSTONES
        layers.append(f"SELECT {cols}, _seq, {k} AS _layer FROM read_parquet({sql_str(ch)})")
        masks.append(f"SELECT id, {k} AS _layer FROM read_parquet({sql_str(ch)})")
        masks.append(f"SELECT id, {k} AS _layer FROM read_parquet({sql_str(tb)})")
        files += [ch, tb]
    union = " UNION ALL ".join(layers)
    if not masks:
        return f"SELECT {cols}, _seq FROM ({union})", files
    mask = " UNION ALL ".join(masks)
    lcols = ", ".join(f'l."{c}"' for c in _cols())
    sql = (
        f"SELECT {lcols}, l._seq "
        f"FROM ({union}) l ANTI JOIN ({mask}) m ON l.id = m.id AND m._layer > l._layer"
    )
    return sql, files


# ------------------------------------------------------------------------------------------------
# writing


def pick_parent(
    root: str | os.PathLike,
    tenant: str,
    policy: Incremental,
    encrypted: bool,
    before: str | None = None,
) -> tuple[Path, list[Path]] | None:
    """The snapshot to write an increment against, with its chain; None: write a full one.

    The tenant's newest snapshot (named before ``before``, so a chain is always in name order), if it and its chain verify, its chain is shorter than
    ``full_every`` increments, it is encrypted exactly when the new one is, and (when encrypted)
    the identity opens it.
    """
    from longmem_etl.snapshots.crypto import is_encrypted, plain_dir
    from longmem_etl.snapshots.layout import list_snapshots

    if policy.full:
        return None
    snaps = [s for s in list_snapshots(root, tenant) if before is None or s.name < before]
    if not snaps:
        return None
    parent = snaps[-1]
    try:
        links = verify_chain(parent, checksums=True)
        if len(links) - 1 >= policy.full_every:
            return None
        from longmem_etl.snapshots.manifest import read_manifest

        manifests = [read_manifest(d) for d in links]
        if any(is_encrypted(m) != encrypted for m in manifests):
            return None
        for d, m in zip(links, manifests, strict=True):
            plain_dir(d, m)  # BadInput when the identity cannot open it: write a full one
    except BadInput:
        return None
    return parent, links


def make_increment(directory: Path, parent: Path, links: list[Path]) -> dict[str, Any] | None:
    """Turn ``directory/memories.parquet`` (the new full state) into an increment against
    ``parent``: writes CHANGES and TOMBSTONES, removes memories.parquet; the manifest entry.

    None (and nothing changed) when an increment would not pay (too much changed, or no room left
    between two ``_seq`` values).
    """
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longmem_etl.schema import MEMORIES_SCHEMA
    from longmem_etl.snapshots.writer import MEMORIES_PARQUET_OPTIONS, conform

    new = directory / "memories.parquet"
    state, _ = state_sql(parent)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        same = " AND ".join(f'n."{c}" IS NOT DISTINCT FROM p."{c}"' for c in _cols() if c != "id")
        # every column compared exactly (no hash: nothing can collide), one join
        con.execute(
            f"""
            CREATE TEMP TABLE j AS
            WITH a AS (
                SELECT n.file_row_number AS n, n.id, p._seq AS pseq,
                       p.id IS NULL OR NOT ({same}) AS changed
                FROM read_parquet({sql_str(new)}, file_row_number = true) n
                LEFT JOIN ({state}) p ON n.id = p.id
            ), b AS (
                SELECT *, max(pseq) OVER (ORDER BY n ROWS BETWEEN UNBOUNDED PRECEDING
                                          AND 1 PRECEDING) AS before_max
                FROM a
            )
            SELECT n, id, changed,
                   CASE WHEN pseq IS NOT NULL AND (before_max IS NULL OR pseq > before_max)
                        THEN pseq END AS kseq
            FROM b
            """
        )
        total = con.execute("SELECT count(*) FROM j").fetchall()[0][0]
        con.execute(
            f"CREATE TEMP TABLE t AS SELECT p.id, p._seq FROM ({state}) p "
            f"ANTI JOIN read_parquet({sql_str(new)}) n ON p.id = n.id"
        )
        con.execute(
            """
            CREATE TEMP TABLE g AS
            WITH w AS (
                SELECT *,
                    last_value(kseq IGNORE NULLS) OVER (ORDER BY n ROWS BETWEEN UNBOUNDED
                        PRECEDING AND 1 PRECEDING) AS lo,
                    first_value(kseq IGNORE NULLS) OVER (ORDER BY n ROWS BETWEEN 1 FOLLOWING
                        AND UNBOUNDED FOLLOWING) AS hi,
                    count(kseq) OVER (ORDER BY n ROWS UNBOUNDED PRECEDING) AS grp
                FROM j
            ), free AS (
                SELECT *, row_number() OVER (PARTITION BY grp ORDER BY n) AS idx,
                       count(*) OVER (PARTITION BY grp) AS cnt
                FROM w WHERE kseq IS NULL
            )
            SELECT n, lo, hi,
                CASE WHEN hi IS NULL THEN coalesce(lo, -1.0) + idx
                     ELSE coalesce(lo, hi - cnt - 1.0)
                          + (hi - coalesce(lo, hi - cnt - 1.0)) * idx / (cnt + 1.0) END AS seq
            FROM free
            UNION ALL
            SELECT n, NULL, NULL, kseq FROM j WHERE kseq IS NOT NULL AND changed
            """
        )
        cramped = con.execute(
            "SELECT count(*) FROM g WHERE (lo IS NOT NULL AND seq <= lo) "
            "OR (hi IS NOT NULL AND seq >= hi)"
        ).fetchall()[0][0]
        n_changed = con.execute("SELECT count(*) FROM g").fetchall()[0][0]
        n_removed = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
        if cramped or (n_changed + n_removed) > MAX_CHANGED_SHARE * max(total, 1):
            return None
        schema = MEMORIES_SCHEMA.append(pa.field("_seq", pa.float64(), nullable=False))
        reader = con.sql(
            f"SELECT r.* EXCLUDE (file_row_number), g.seq AS _seq "
            f"FROM read_parquet({sql_str(new)}, file_row_number = true) r "
            f"JOIN g ON r.file_row_number = g.n ORDER BY g.n"
        ).to_arrow_reader(50_000)
        with pq.ParquetWriter(directory / CHANGES, schema, **MEMORIES_PARQUET_OPTIONS) as w:
            for batch in reader:
                w.write_table(conform(batch, schema))
        ids = con.sql("SELECT id FROM t ORDER BY _seq").to_arrow_table()
        pq.write_table(
            pa.table({"id": ids.column("id").cast(pa.string())}),
            directory / TOMBSTONES,
            compression="zstd",
        )
    finally:
        con.close()
    new.unlink()
    from longmem_etl.snapshots.manifest import read_manifest

    return {
        "parent": parent.name,
        "parent_manifest_sha256": read_manifest(parent).get("manifest_sha256"),
        "base": links[0].name,
        "depth": len(links),
        "changed_rows": int(n_changed),
        "removed_ids": int(n_removed),
    }


# ------------------------------------------------------------------------------------------------
# reading


def write_state(path: str | os.PathLike, out: Path) -> int:
    """Write ``path``'s full state as ``out`` (a memories.parquet, in the account's order)."""
    import duckdb
    import pyarrow.parquet as pq

    from longmem_etl.schema import MEMORIES_SCHEMA
    from longmem_etl.snapshots.writer import MEMORIES_PARQUET_OPTIONS, conform

    sql, _ = state_sql(path)
    cols = ", ".join(f'"{c}"' for c in _cols())
    con = duckdb.connect()
    rows = 0
    try:
        con.execute("SET TimeZone = 'UTC'")
        reader = con.sql(f"SELECT {cols} FROM ({sql}) ORDER BY _seq").to_arrow_reader(50_000)
        with pq.ParquetWriter(out, MEMORIES_SCHEMA, **MEMORIES_PARQUET_OPTIONS) as w:
            for batch in reader:
                w.write_table(conform(batch, MEMORIES_SCHEMA))
                rows += batch.num_rows
    finally:
        con.close()
    return rows


def state_dir(path: str | os.PathLike, manifest: dict[str, Any] | None = None) -> Path:
    """The directory holding ``path``'s full state as plain files (``memories.parquet``,
    ``collections.parquet``, ``rejected.parquet``, ``manifest.json``): ``path`` itself for a plain
    full snapshot, else a private copy (decrypted and/or materialised from the chain), cached for
    the process and removed at exit. BadInput on a broken chain or a missing identity."""
    from longmem_etl.snapshots import crypto
    from longmem_etl.snapshots.manifest import file_digest, read_manifest, write_manifest

    p = Path(path)
    if manifest is None:
        manifest = read_manifest(p)
    if not is_increment(manifest):
        return crypto.plain_dir(p, manifest)
    own = crypto.plain_dir(p, manifest)  # this increment's own files (decrypted if need be)
    key = (str(p.resolve()), str(own))
    cached = _states.get(key)
    if cached is not None and cached.is_dir():
        return cached
    full = read_manifest(own)
    dest = crypto.new_private_dir() / p.parent.name / p.name
    dest.mkdir(parents=True)
    try:
        write_state(p, dest / "memories.parquet")
        files = {}
        for name in ("memories.parquet", "collections.parquet", "rejected.parquet"):
            if name != "memories.parquet" and (own / name).is_file():
                shutil.copyfile(own / name, dest / name)
            if (dest / name).is_file():
                digest, size = file_digest(dest / name)
                files[name] = {"sha256": digest, "bytes": size}
        write_manifest(dest, {**full, "snapshot": p.name, "files": files})
    except BaseException:
        shutil.rmtree(dest.parent.parent, ignore_errors=True)
        raise
    _states[key] = dest
    return dest


# ------------------------------------------------------------------------------------------------
# rebasing (forget removes a base a kept increment needs)


def rebase(path: str | os.PathLike) -> None:
    """Rewrite the increment ``path`` in place as a full snapshot with the same state.

    The new ``memories.parquet`` (sealed to the same recipients when encrypted) is staged under a
    dot name and renamed next to the increment's files; ``manifest.json`` is then replaced
    atomically (the commit point: before it the dir is still the increment, after it the full
    snapshot), and only then are the increment's own files deleted. The collections and rejected
    files are kept as they are.
    """
    import pyrage

    from longmem_etl.snapshots import crypto
    from longmem_etl.snapshots.manifest import (
        MANIFEST,
        file_digest,
        read_manifest,
        write_manifest,
    )

    p = Path(path)
    public = read_manifest(p)
    if not is_increment(public):
        return
    verify_chain(p, checksums=True)
    encrypted = crypto.is_encrypted(public)
    own = crypto.plain_dir(p, public)
    full = read_manifest(own)
    work = crypto.new_private_dir()
    plain = work / "memories.parquet"
    write_state(p, plain)
    digest, size = file_digest(plain)
    full = {k: v for k, v in full.items() if k != "incremental"}
    full["files"] = {
        "memories.parquet": {"sha256": digest, "bytes": size},
        **{k: v for k, v in full["files"].items() if k not in (CHANGES, TOMBSTONES)},
    }
    # the checksum it had, so its increments (which name it) still find their parent
    rebased = {
        "from_increment_of": public["incremental"]["parent"],
        "from_manifest": public.get("manifest_sha256"),
    }
    full["rebased"] = rebased
    old_files = [CHANGES, TOMBSTONES]
    if encrypted:
        recipients = crypto.parse_recipients(public["encryption"].get("recipients") or [])
        if not recipients:
            raise BadInput(f"{p}: cannot rebase: its manifest names no recipients")
        staged = p / ".rebase-memories.parquet.age"
        pyrage.encrypt_file(str(plain), str(staged), recipients)
        full_name = "manifest.full.rebased.json.age"
        if full_name == crypto.full_manifest_name(public):
            full_name = crypto.FULL_MANIFEST
        from longmem_etl import jsonio

        (p / full_name).write_bytes(pyrage.encrypt(jsonio.dumps(full), recipients))
        files = {
            k: v
            for k, v in public["files"].items()
            if k not in (CHANGES + ".age", TOMBSTONES + ".age", crypto.full_manifest_name(public))
        }
        d1, s1 = file_digest(staged)
        d2, s2 = file_digest(p / full_name)
        files["memories.parquet.age"] = {"sha256": d1, "bytes": s1}
        files[full_name] = {"sha256": d2, "bytes": s2}
        new_manifest = {k: v for k, v in public.items() if k != "incremental"}
        new_manifest["rebased"] = rebased
        new_manifest["files"] = files
        new_manifest["encryption"] = {**public["encryption"], "manifest": full_name}
        old_files = [CHANGES + ".age", TOMBSTONES + ".age", crypto.full_manifest_name(public)]
        final = p / "memories.parquet.age"
    else:
        staged = p / ".rebase-memories.parquet"
        shutil.copyfile(plain, staged)
        new_manifest = full
        final = p / "memories.parquet"
    shutil.rmtree(work, ignore_errors=True)
    os.replace(staged, final)
    tmp = p / ".rebase-manifest"
    tmp.mkdir(exist_ok=True)
    write_manifest(tmp, new_manifest)
    os.replace(tmp / MANIFEST, p / MANIFEST)  # the commit point
    tmp.rmdir()
    for name in old_files:
        (p / name).unlink(missing_ok=True)


def rebase_orphans(keep: list[Path], remove: list[Path]) -> list[str]:
    """Before ``remove`` goes: every kept increment whose parent is removed becomes a full
    snapshot (oldest first, so a kept child of a rebased increment stays valid). Returns them."""
    from longmem_etl.snapshots.manifest import read_manifest

    gone = {r.resolve() for r in remove}
    done = []
    for k in sorted(keep, key=lambda x: x.name):
        try:
            m = read_manifest(k)
        except BadInput:
            continue
        if not is_increment(m):
            continue
        parent = (k.parent / str(m["incremental"].get("parent"))).resolve()
        if parent in gone:
            rebase(k)
            done.append(str(k))
    return done


__all__ = [
    "CHANGES",
    "DEFAULT_FULL_EVERY",
    "TOMBSTONES",
    "Incremental",
    "chain",
    "is_increment",
    "make_increment",
    "pick_parent",
    "rebase",
    "rebase_orphans",
    "state_dir",
    "state_sql",
    "verify_chain",
    "write_state",
]

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
            plain_dir(d, m, hashes=True)  # BadInput when the identity cannot open it: full
    except BadInput:
        return None
    return parent, links


def hashes_state_sql(path: str | os.PathLike) -> str:
    """``SELECT id, md5, _seq`` of ``path``'s full state, like ``state_sql`` but from the layers'
    hash files (``snapshots/rowhash.py``): no content column is read, except from a layer
    written before hashes existed, whose digests are computed from its content."""
    from longmem_etl.snapshots.crypto import plain_dir
    from longmem_etl.snapshots.manifest import read_manifest
    from longmem_etl.snapshots.rowhash import layer_sql

    layers, masks = [], []
    for k, (d, m) in enumerate(chain(path)):
        plain = plain_dir(d, m, hashes=True)
        own = read_manifest(plain) if plain != d else m
        if k == 0:
            layers.append(
                f"SELECT *, 0 AS _layer FROM ({layer_sql(plain, own, 'memories.parquet', True)})"
            )
            continue
        layers.append(f"SELECT *, {k} AS _layer FROM ({layer_sql(plain, own, CHANGES, False)})")
        masks.append(f"SELECT id, {k} AS _layer FROM read_parquet({sql_str(plain / CHANGES)})")
        masks.append(f"SELECT id, {k} AS _layer FROM read_parquet({sql_str(plain / TOMBSTONES)})")
    union = " UNION ALL ".join(layers)
    if not masks:
        return f"SELECT id, md5, _seq FROM ({union})"
    mask = " UNION ALL ".join(masks)
    return (
        f"SELECT l.id, l.md5, l._seq FROM ({union}) l "
        f"ANTI JOIN ({mask}) m ON l.id = m.id AND m._layer > l._layer"
    )


class _ParentIndex:
    """The parent's full state as digests sorted for lookups, with each row's ``_seq`` and id."""

    def __init__(self, con: Any, parent: Path) -> None:
        import numpy as np

        from longmem_etl.snapshots.rowhash import as_fixed, words

        t = con.sql(hashes_state_sql(parent)).to_arrow_table()
        hi, lo = words(as_fixed(t.column("md5")))
        order = np.lexsort((lo, hi))
        self.hi, self.lo = hi[order], lo[order]
        self.seq = t.column("_seq").to_numpy()[order]
        self.ids = t.column("id").combine_chunks().take(order)
        self.matched = np.zeros(len(order), dtype=bool)

    def find(self, hi: Any, lo: Any) -> tuple[Any, Any]:
        """``(found, position)`` of each digest (``hi``, ``lo`` uint64 arrays) in the index."""
        import numpy as np

        n = len(self.hi)
        if n == 0:
            return np.zeros(len(hi), dtype=bool), np.zeros(len(hi), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.hi, hi), n - 1)
        found = (self.hi[pos] == hi) & (self.lo[pos] == lo)
        # same first 8 bytes, other last 8 (about 2^-64 per pair): search the run exactly
        for i in np.flatnonzero(~found & (self.hi[pos] == hi)):
            j = int(pos[i])
            while j < n and self.hi[j] == hi[i] and self.lo[j] != lo[i]:
                j += 1
            if j < n and self.hi[j] == hi[i]:
                found[i], pos[i] = True, j
        return found, pos


class IncrementSink:
    """Receives the new state's rows in order and keeps only what changed against ``parent``.

    Each batch is hashed (``rowhash.digests``) and looked up in the parent's digests (one
    sorted NumPy index, built from hash files only): a row found there is unchanged and only its
    parent ``_seq`` is remembered; every other row (added or changed) goes to a candidates file.
    ``finish`` keeps the parent ``_seq`` of the longest run of unchanged rows still in the
    parent's order (all of them unless rows moved), gives every other row a ``_seq`` between its
    kept neighbours, and writes the increment's files (a moved row is stored like a changed one,
    its content fetched from the parent). When the increment would not pay (over
    ``MAX_CHANGED_SHARE`` changed, or no room between two ``_seq``) it writes the full state
    instead. So the full state is never written on the usual path and the parent's content is
    never read unless rows moved.
    """

    def __init__(self, directory: Path, parent: Path, links: list[Path], con: Any) -> None:
        self.directory, self.parent, self.links, self.con = directory, parent, links, con
        self.index: _ParentIndex | None = None
        self.rows = 0
        self.pseqs: list[Any] = []
        self.cand_ids: list[Any] = []
        self.cand_md5: list[Any] = []
        self._cand_writer: Any = None

    @property
    def _cand_path(self) -> Path:
        return self.directory / ".candidates.parquet"

    def write(self, table: Any) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        from longmem_etl.schema import MEMORIES_SCHEMA
        from longmem_etl.snapshots.rowhash import digests, words
        from longmem_etl.snapshots.writer import MEMORIES_PARQUET_OPTIONS

        if self.index is None:
            self.index = _ParentIndex(self.con, self.parent)
        md5 = digests(self.con, table)
        found, pos = self.index.find(*words(md5))
        self.pseqs.append(np.where(found, self.index.seq[pos], np.nan))
        self.index.matched[pos[found]] = True
        if found.all():
            self.rows += table.num_rows
            return
        mask = pa.array(~found)
        cand = table.filter(mask)
        n = np.flatnonzero(~found) + self.rows
        if self._cand_writer is None:
            schema = MEMORIES_SCHEMA.append(pa.field("_n", pa.int64(), nullable=False))
            self._cand_writer = pq.ParquetWriter(
                self._cand_path, schema, **MEMORIES_PARQUET_OPTIONS
            )
        field = self._cand_writer.schema.field("_n")
        self._cand_writer.write_table(cand.append_column(field, pa.array(n, pa.int64())))
        self.cand_ids.append(cand.column("id"))
        self.cand_md5.append(md5.filter(mask))
        self.rows += table.num_rows

    def abort(self) -> None:
        if self._cand_writer is not None:
            self._cand_writer.close()
            self._cand_writer = None

    def finish(self) -> dict[str, Any] | None:
        """Write the increment's files and return its manifest entry; or write a full snapshot's
        files (``FullSink``) and return None when an increment would not pay."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from longmem_etl.schema import MEMORIES_SCHEMA
        from longmem_etl.snapshots.rowhash import (
            HASHES,
            HASHES_OPTIONS,
            HASHES_SCHEMA,
            digests,
            hashes_table,
        )
        from longmem_etl.snapshots.writer import MEMORIES_PARQUET_OPTIONS, conform

        if self.index is None:
            self.index = _ParentIndex(self.con, self.parent)
        self.abort()  # closes the candidates file
        pseq = np.concatenate(self.pseqs) if self.pseqs else np.zeros(0)
        found = ~np.isnan(pseq)
        kept = _in_order(pseq, found)
        kseq = np.where(kept, pseq, np.nan)
        cand_ids = (
            pa.chunked_array(self.cand_ids, pa.string()).combine_chunks()
            if self.cand_ids
            else pa.array([], pa.string())
        )
        gone = ~self.index.matched
        lost_ids = self.index.ids.filter(pa.array(gone))
        lost_seq = self.index.seq[gone]
        removed = pc.invert(pc.is_in(lost_ids, value_set=cand_ids))
        rm_ids = lost_ids.filter(removed)
        rm_seq = lost_seq[np.asarray(removed.to_numpy(zero_copy_only=False), dtype=bool)]
        n_changed, n_removed = int((~kept).sum()), len(rm_ids)
        if (n_changed + n_removed) > MAX_CHANGED_SHARE * max(self.rows, 1):
            self._write_full(pseq, found)
            return None
        seqs, cramped = _free_seqs(kseq)
        if cramped:
            self._write_full(pseq, found)
            return None
        new_seq = np.full(len(kseq), np.nan)
        new_seq[~kept] = seqs
        schema = MEMORIES_SCHEMA.append(pa.field("_seq", pa.float64(), nullable=False))
        hashes = pq.ParquetWriter(self.directory / HASHES, HASHES_SCHEMA, **HASHES_OPTIONS)
        with pq.ParquetWriter(self.directory / CHANGES, schema, **MEMORIES_PARQUET_OPTIONS) as w:
            if self._cand_path.exists():
                for batch in pq.ParquetFile(self._cand_path).iter_batches(50_000):
                    at = batch.column("_n").to_numpy()
                    t = pa.Table.from_batches([batch]).drop_columns(["_n"])
                    w.write_table(conform(t.append_column("_seq", pa.array(new_seq[at])), schema))
            md5 = (
                pa.chunked_array(self.cand_md5, pa.binary(16)).combine_chunks()
                if self.cand_md5
                else pa.array([], pa.binary(16))
            )
            hashes.write_table(hashes_table(md5))
            moved = found & ~kept
            if moved.any():  # unchanged rows out of the parent's order: their content, new _seq
                for t in self._parent_rows(pseq[moved], new_seq[moved]):
                    t = conform(t, schema)
                    w.write_table(t)
                    hashes.write_table(hashes_table(digests(self.con, t.drop_columns(["_seq"]))))
        hashes.close()
        self._cand_path.unlink(missing_ok=True)
        order = np.argsort(rm_seq, kind="stable")
        pq.write_table(
            pa.table({"id": rm_ids.take(pa.array(order)).cast(pa.string())}),
            self.directory / TOMBSTONES,
            compression="zstd",
        )
        from longmem_etl.snapshots.manifest import read_manifest

        return {
            "parent": self.parent.name,
            "parent_manifest_sha256": read_manifest(self.parent).get("manifest_sha256"),
            "base": self.links[0].name,
            "depth": len(self.links),
            "changed_rows": n_changed,
            "removed_ids": n_removed,
        }

    def _parent_rows(self, old: Any, new: Any) -> Any:
        """The parent's rows whose ``_seq`` is in ``old``, with ``_seq`` set to ``new``."""
        import duckdb
        import pyarrow as pa

        cols = ", ".join(f's."{c}"' for c in _cols())
        state, _ = state_sql(self.parent)
        read = duckdb.connect()
        try:
            read.execute("SET TimeZone = 'UTC'").fetchall()
            read.register("_moved", pa.table({"old": pa.array(old), "new": pa.array(new)}))
            reader = read.sql(
                f"SELECT {cols}, m.new AS _seq FROM ({state}) s JOIN _moved m ON s._seq = m.old"
            ).to_arrow_reader(50_000)
            for batch in reader:
                yield pa.Table.from_batches([batch])
        finally:
            read.close()

    def _write_full(self, pseq: Any, found: Any) -> None:
        """The full state as a full snapshot's files: the parent's unchanged rows (joined on
        their ``_seq``) and the candidates, in the account's order. Only when an increment does
        not pay."""
        import duckdb
        import numpy as np
        import pyarrow as pa

        from longmem_etl.schema import MEMORIES_SCHEMA
        from longmem_etl.snapshots.writer import FullSink, conform

        cols = ", ".join(f'"{c}"' for c in _cols())
        state, _ = state_sql(self.parent)
        k = pa.table(
            {
                "n": pa.array(np.flatnonzero(found), pa.int64()),
                "kseq": pa.array(pseq[found], pa.float64()),
            }
        )
        parts = [f"SELECT {cols}, k.n FROM ({state}) s JOIN _kept k ON s._seq = k.kseq"]
        if self._cand_path.exists():
            parts.append(f"SELECT {cols}, _n AS n FROM read_parquet({sql_str(self._cand_path)})")
        read = duckdb.connect()  # the sink hashes on self.con while this one streams
        try:
            read.execute("SET TimeZone = 'UTC'").fetchall()
            read.register("_kept", k)
            reader = read.sql(
                f"SELECT {cols} FROM ({' UNION ALL '.join(parts)}) ORDER BY n"
            ).to_arrow_reader(50_000)
            sink = FullSink(self.directory, self.con)
            try:
                for batch in reader:
                    sink.write(conform(batch, MEMORIES_SCHEMA))
            finally:
                sink.finish()
        finally:
            read.close()
        self._cand_path.unlink(missing_ok=True)


def _in_order(pseq: Any, found: Any) -> Any:
    """Which found rows keep their parent ``_seq``: a longest strictly increasing run of them
    (all of them when none moved, checked first without a loop), so one row moved far does not
    make every row after it count as moved."""
    import bisect

    import numpy as np

    at = np.flatnonzero(found)
    vals = pseq[at]
    kept = np.zeros(len(pseq), dtype=bool)
    if len(vals) < 2 or bool(np.all(np.diff(vals) > 0)):
        kept[at] = True
        return kept
    tails: list[float] = []  # smallest tail value of an increasing run of each length
    tail_at: list[int] = []
    prev = np.full(len(vals), -1, dtype=np.int64)
    for i, v in enumerate(vals.tolist()):
        j = bisect.bisect_left(tails, v)
        if j == len(tails):
            tails.append(v)
            tail_at.append(i)
        else:
            tails[j], tail_at[j] = v, i
        prev[i] = tail_at[j - 1] if j else -1
    i = tail_at[-1]
    while i >= 0:
        kept[at[i]] = True
        i = int(prev[i])
    return kept


def _free_seqs(kseq: Any) -> tuple[Any, bool]:
    """``_seq`` of every row not kept (those with a NaN ``kseq``), in row order: after the last
    kept row before it by whole steps at the end, else evenly between its kept neighbours; and
    whether some gap ran out of room (a value equal to a neighbour)."""
    import numpy as np

    n = len(kseq)
    kept = ~np.isnan(kseq)
    at = np.arange(n)
    last = np.maximum.accumulate(np.where(kept, at, -1)) if n else at
    nxt = np.minimum.accumulate(np.where(kept, at, n)[::-1])[::-1] if n else at
    free = ~kept
    last, nxt, i = last[free], nxt[free], at[free]
    lo = np.where(last >= 0, kseq[np.maximum(last, 0)], np.nan)
    hi = np.where(nxt < n, kseq[np.minimum(nxt, max(n - 1, 0))], np.nan)
    idx = (i - last).astype(np.float64)  # 1.. within the gap
    cnt = (nxt - last - 1).astype(np.float64)
    with np.errstate(invalid="ignore"):
        base = np.where(np.isnan(lo), hi - cnt - 1.0, lo)
        between = base + (hi - base) * idx / (cnt + 1.0)
        after = np.where(np.isnan(lo), -1.0, lo) + idx
        seq = np.where(np.isnan(hi), after, between)
        cramped = bool(np.any(~np.isnan(lo) & (seq <= lo)) or np.any(~np.isnan(hi) & (seq >= hi)))
    return seq, cramped


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
    from longmem_etl.snapshots.rowhash import HASHES

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
    # the increment's hash file covers its changed rows only: a rebased snapshot has none (used
    # as a parent, its digests are computed from its content)
    full = {k: v for k, v in full.items() if k not in ("incremental", "row_hashes")}
    full["files"] = {
        "memories.parquet": {"sha256": digest, "bytes": size},
        **{k: v for k, v in full["files"].items() if k not in (CHANGES, TOMBSTONES, HASHES)},
    }
    # the checksum it had, so its increments (which name it) still find their parent
    rebased = {
        "from_increment_of": public["incremental"]["parent"],
        "from_manifest": public.get("manifest_sha256"),
    }
    full["rebased"] = rebased
    old_files = [CHANGES, TOMBSTONES, HASHES]
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
            if k
            not in (
                CHANGES + ".age",
                TOMBSTONES + ".age",
                HASHES + ".age",
                crypto.full_manifest_name(public),
            )
        }
        d1, s1 = file_digest(staged)
        d2, s2 = file_digest(p / full_name)
        files["memories.parquet.age"] = {"sha256": d1, "bytes": s1}
        files[full_name] = {"sha256": d2, "bytes": s2}
        new_manifest = {k: v for k, v in public.items() if k != "incremental"}
        new_manifest["rebased"] = rebased
        new_manifest["files"] = files
        new_manifest["encryption"] = {**public["encryption"], "manifest": full_name}
        old_files = [
            CHANGES + ".age",
            TOMBSTONES + ".age",
            HASHES + ".age",
            crypto.full_manifest_name(public),
        ]
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
    "IncrementSink",
    "hashes_state_sql",
    "pick_parent",
    "rebase",
    "rebase_orphans",
    "state_dir",
    "state_sql",
    "verify_chain",
    "write_state",
]

"""Reconciliation: before re-sending anything that may already have landed, ask the target.

Chunks left ``in_flight`` by a killed run, ``failed`` ones, and chunks whose call ended ambiguously
(the write may have committed) are never re-sent blindly. Instead the uploader collects them and, once
per resume and once per pass for ambiguities, builds a `TargetIndex` from ONE export of the target and
marks every item it finds as done (recording its target id); only the missing items are re-sent.

Cost choice: one ``export_account()`` per reconciliation round, not a lookup per chunk. At 20k items
that is one call; at 1M it is one large download (the same one verification makes) instead of
thousands of paged ``list_memories`` calls, and ambiguous chunks are deferred to the end of a pass so
a run with many ambiguities still pays for one export per round, not per chunk. A backend that
cannot export the account in one call (404/405/413/501/504, or Unsupported) is read page by page
with ``list_memories`` instead, only over the collections of the chunks being reconciled. (In provenance
mode the round starts as soon as the work queue drains, overlapping the pass's last calls.)
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from longmem_etl.api.retry import Interrupted, retry_read  # noqa: F401  (Interrupted: re-exported)
from longmem_etl.errors import APIError, Unsupported
from longmem_etl.migrate.journal import Journal
from longmem_etl.migrate.keys import fingerprint, marker_of


def retrying(
    call: Any,
    *,
    stop: threading.Event | None,
    max_retries: int = 30,
    give_up_after: float | None = None,
) -> Any:
    """A read retried through transient errors, the way every read is (``api/retry.py``), at most
    ``max_retries`` times and (if set) ``give_up_after`` seconds after the first failure."""
    return retry_read(call, stop=stop, retries=max_retries, give_up_after=give_up_after)


def export_target(
    target: Any,
    *,
    stop: threading.Event | None = None,
    max_retries: int = 30,
    give_up_after: float | None = None,
) -> dict[str, Any]:
    """``target.export_account()`` retried through transient errors (within the budget)."""
    return retrying(
        target.export_account, stop=stop, max_retries=max_retries, give_up_after=give_up_after
    )


def list_collection(
    target: Any, collection: str, *, stop: threading.Event | None = None, page: int = 100
) -> Iterator[dict[str, Any]]:
    """Every memory of one collection, paged with ``list_memories`` (archived included).

    Writers running meanwhile only insert, which can shift a memory to the next page (seen twice,
    deduplicated by id by the caller), never make one skip a page."""
    offset = 0
    while True:
        rows = retrying(
            lambda o=offset: target.list_memories(
                collection=collection, limit=page, offset=o, include_archived=True
            ),
            stop=stop,
        )
        yield from rows
        if len(rows) < page:
            return
        offset += len(rows)


# Answers that mean "this backend cannot hand over the whole account in one call".
EXPORT_UNAVAILABLE = frozenset({404, 405, 413, 501, 504})


class TargetIndex:
    """Where each migrated memory sits in the target, by provenance marker and by fingerprint.

    ``migration_id`` is the source key the markers must carry (`source.source_key`): the name is
    kept from when markers named a run."""

    def __init__(
        self, memories: Iterable[dict[str, Any]], migration_id: str, *, fingerprints: bool = True
    ) -> None:
        self.by_source: dict[str, list[str]] = defaultdict(list)
        self.by_fp: dict[str, list[str]] = defaultdict(list)
        self.size = 0
        self.keys: Any = None
        """The whole read's key table (`targetread.read_target_keys`), None for listed pages."""
        seen: set[str] = set()
        for m in memories:
            tid = None if m.get("id") is None else str(m["id"])
            if tid is not None:
                if tid in seen:  # paged listings can show a memory twice
                    continue
                seen.add(tid)
            self.size += 1
            sid, mig = marker_of(m.get("metadata"))
            if sid is not None and mig == migration_id:
                self.by_source[sid].append(tid)
            if fingerprints:  # only --no-provenance needs them; hashing 1M texts is not free
                fp = fingerprint(m.get("collection"), m.get("container_tag"), m.get("text"))
                self.by_fp[fp].append(tid)

    @classmethod
    def from_keys(
        cls, keys: Any, migration_id: str, *, source_ids: Iterable[str] | None = None
    ) -> TargetIndex:
        """The index of a `targetread.read_target_keys` table (ids already unique).

        ``source_ids``: index only the markers of these source memories, and no fingerprints
        (provenance reconciliation of a few chunks: the whole account's rows as Python dicts
        cost 50-180 ms at 20k on a busy machine, on the path from the last answer to the end of
        the upload, for the few hundred items being looked up)."""
        index = cls([], migration_id)
        index.size = keys.num_rows
        if source_ids is not None:
            keys = _marked(keys, migration_id, source_ids)
            cols = keys.select(["target_id", "prov_source_id"]).to_pydict()
            for tid, sid in zip(cols["target_id"], cols["prov_source_id"], strict=True):
                index.by_source[sid].append(tid)
            return index
        cols = keys.select(["target_id", "prov_source_id", "prov_key", "fp"]).to_pydict()
        for tid, sid, key, fp in zip(
            cols["target_id"], cols["prov_source_id"], cols["prov_key"], cols["fp"], strict=True
        ):
            if sid is not None and key == migration_id:
                index.by_source[sid].append(tid)
            if fp is not None:
                index.by_fp[fp].append(tid)
        return index

    @classmethod
    def from_target(
        cls,
        target: Any,
        migration_id: str,
        *,
        fingerprints: bool = True,
        collections: Iterable[str] | None = None,
        paged: bool = False,
        stop: threading.Event | None = None,
        max_retries: int = 30,
        give_up_after: float | None = None,
        verifiable: bool = False,
        source_ids: Iterable[str] | None = None,
    ) -> TargetIndex:
        """One paged read of the account (`targetread`); or, when the backend cannot export (or
        ``paged``), the listed pages of ``collections`` (default: all of the account's
        collections). ``verifiable``: read the keys exactly as verification does (content
        fingerprints where it reads them), so `keys` can stand for verification's read.
        ``source_ids`` (with ``fingerprints=False``): only these markers are looked up in a
        whole read's keys (`from_keys`); listed pages index everything."""
        if not paged:
            from longmem_etl.migrate.targetread import read_target_keys

            try:
                keys = read_target_keys(
                    target,
                    own_key=migration_id,
                    fingerprints="all" if fingerprints else verifiable,
                    stop=stop,
                    max_retries=max_retries,
                    give_up_after=give_up_after,
                    detail=False,  # neither the index nor verification reads them
                )
                wanted = None if fingerprints else source_ids
                index = cls.from_keys(keys, migration_id, source_ids=wanted)
                index.keys = keys
                return index
            except Unsupported:
                pass
            except APIError as exc:
                if exc.status not in EXPORT_UNAVAILABLE:
                    raise
        if collections is None:
            listed = retrying(target.collections, stop=stop)
            collections = [c.get("name") if isinstance(c, dict) else c for c in listed]
        names = sorted({c for c in collections if c})
        memories = (m for name in names for m in list_collection(target, name, stop=stop))
        return cls(memories, migration_id, fingerprints=fingerprints)


def _marked(keys: Any, migration_id: str, source_ids: Iterable[str]) -> Any:
    """The rows of ``keys`` whose marker is this source's and names one of ``source_ids``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array(sorted(set(source_ids)), type=pa.string())
    sid = keys["prov_source_id"].cast(pa.string())
    mask = pc.and_(
        pc.equal(keys["prov_key"].cast(pa.string()), migration_id),
        pc.is_in(sid, value_set=wanted),
    )
    return keys.filter(pc.fill_null(mask, False))


def reconcile_chunks(
    journal: Journal,
    index: TargetIndex,
    chunk_nos: Iterable[int],
    *,
    provenance: bool,
    pending: dict[int, list[tuple[str, str]]] | None = None,
) -> tuple[dict[int, int], int]:
    """Mark every item of ``chunk_nos`` found in the target as done.

    Returns (missing items per chunk, items found). ``pending``: the chunks' planned items
    (`Journal.pending_items_by_chunk`) if the caller already read them, with none of their
    calls out and what landed committed (else they are read here).

    Provenance mode matches the marker exactly. Fingerprint mode counts: a target copy of content
    ``fp`` is "ours and not yet accounted for" only beyond the items already done with that ``fp``.
    """
    wanted = set(chunk_nos)
    if pending is None:
        pending = journal.pending_items_by_chunk(wanted)
    batch: list[tuple[int, list[tuple[str, str | None]]]] = []
    missing: dict[int, int] = {}
    if provenance:
        for chunk_no in sorted(wanted):
            rows = pending.get(chunk_no, [])
            found = [
                (sid, index.by_source[sid][0]) for sid, _fp in rows if index.by_source.get(sid)
            ]
            batch.append((chunk_no, found))
            missing[chunk_no] = len(rows) - len(found)
    else:
        done_fp: Counter[str] = Counter()
        claimed = journal.claimed_target_ids()
        for _sid, _tid, _c, _t, fp, _chunk, state in journal.iter_items():
            if state == "done":
                done_fp[fp] += 1
        available = {fp: len(tids) - done_fp.get(fp, 0) for fp, tids in index.by_fp.items()}
        free_ids = {fp: [t for t in tids if t not in claimed] for fp, tids in index.by_fp.items()}
        for chunk_no in sorted(wanted):
            rows = pending.get(chunk_no, [])
            found = []
            for sid, fp in rows:
                if available.get(fp, 0) > 0:
                    available[fp] -= 1
                    ids = free_ids.get(fp) or []
                    found.append((sid, ids.pop(0) if ids else None))
            batch.append((chunk_no, found))
            missing[chunk_no] = len(rows) - len(found)
    # one durable transaction for the whole round, whatever its size
    journal.record_done_batch(batch)
    return missing, sum(len(found) for _, found in batch)

"""The embedded Longmem store: one tenant in one SQLite file (``local:PATH``).

It is what quickstart, the Dagster defaults, the tests and the benchmarks run against, and what a
user restores a backup into to look at it offline, so it behaves like the hosted API where the
toolkit can observe it: SDK method names, keyword-only arguments and return shapes; new ids on every
write (``add_many`` never deduplicates — exactly-once is the toolkit's job); list order pinned first,
then newest first; errors as ``APIError`` with an HTTP-like status (404 unknown id, 422 invalid
input, 503 store busy). Its limits (text length, items per call, request and metadata bytes;
``api.limits.StoreLimits``, settable in the URI) are the same on every write path; ``seed_dump`` is
the one verbatim restore that checks none.

Storage (see ``localrows`` for the lossless row codec):

- ``memories``: a column per known field, ``extra`` (unknown fields, JSON), ``fidelity`` (absent keys,
  odd-typed values, key order), derived epoch columns for ordering; ``seq`` keeps insertion order;
- ``memories_fts``: an FTS5 index over ``text`` kept in step by triggers (search/forget use BM25);
- ``collections``: the collection list exactly as given (strings or objects), in order;
- ``header``: the seeded dump's top-level keys in order (tenant, exported_at, unknown keys ...);
- ``meta``: store format, tenant, whether the store was seeded.

``seed_dump`` loads a dump verbatim, so ``export_account()`` returns it key for key; for a store that
was never seeded, the export is ``{tenant, exported_at, collections, memories}``.

Concurrency and durability are the SQLite file's (``api.localdb.StoreFile``): a write is durable
when it returns, and 8 uploader threads (or processes) can share one store.

The rooms: this module is the API calls; ``localcheck`` validates them (422s, limits),
``localsearch`` ranks keyword search, ``localload`` seeds a dump verbatim, ``localoffline`` answers
the calls that need the hosted service, ``localrows`` encodes rows, ``localdb`` owns the file.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from longmem_etl import jsonio
from longmem_etl.api import localpages, localrows
from longmem_etl.api.faults import FaultConfig, FaultInjector
from longmem_etl.api.limits import StoreLimits, plain_json
from longmem_etl.api.localcheck import (
    check_limits,
    check_new_memory,
    check_request,
    new_ids,
    new_memory_row,
    unprocessable,
)
from longmem_etl.api.localdb import encoded_rows
from longmem_etl.api.localload import SeedableStore
from longmem_etl.api.localoffline import OfflineCalls
from longmem_etl.api.localsearch import search_seqs
from longmem_etl.errors import AmbiguousError, APIError
from longmem_etl.names import collection_name

MAX_BATCH = StoreLimits.max_items  # defaults; a store's own are ``LocalStore.limits``
MAX_TEXT_CHARS = StoreLimits.max_text_chars

_ORDER = "ORDER BY coalesce(pinned, 0) DESC, created_ts DESC, seq DESC"


F = TypeVar("F", bound=Callable[..., Any])

_ITEM_FIELDS = frozenset({"text", "container_tag", "importance", "category", "metadata", "source"})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _api(*, write: bool) -> Callable[[F], F]:
    """Wrap a protocol method: injected faults first, SQLite trouble as 503, ambiguity after commit."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: LocalStore, *args: Any, **kwargs: Any) -> Any:
            ambiguous = (
                self._faults.before(fn.__name__, write=write) if self._faults is not None else False
            )
            try:
                result = fn(self, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                raise APIError(503, f"{fn.__name__}: local store busy: {exc}") from exc
            if ambiguous:
                raise AmbiguousError(
                    f"{fn.__name__}: timed out waiting for the response "
                    "(injected fault; the write was committed)"
                )
            return result

        return wrapper  # type: ignore[return-value]

    return deco


class LocalStore(SeedableStore, OfflineCalls):
    """One tenant in one SQLite file. Implements ``LongmemAPI``; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        faults: FaultConfig | None = None,
        create: bool = True,
        tenant: str | None = None,
        limits: StoreLimits | None = None,
    ) -> None:
        self._faults = FaultInjector(faults) if faults is not None and faults.active else None
        self.limits = limits or StoreLimits()
        self.fault_config = faults
        super().__init__(path, create=create, tenant=tenant)
        self.uri = f"local:{self.path}"

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    # -- helpers ----------------------------------------------------------------------------------

    def _ensure_collection(self, conn: sqlite3.Connection, name: str) -> None:
        if conn.execute("SELECT 1 FROM collections WHERE name=?", (name,)).fetchone():
            return
        first = conn.execute("SELECT raw FROM collections ORDER BY position LIMIT 1").fetchone()
        style_is_str = bool(first) and isinstance(localrows.loads(first[0]), str)
        raw = name if style_is_str else {"name": name}
        conn.execute(
            "INSERT INTO collections(position, name, raw) VALUES "
            "((SELECT coalesce(max(position), -1) + 1 FROM collections), ?, ?)",
            (name, localrows.dumps(raw)),
        )

    def _row(self, conn: sqlite3.Connection, memory_id: str, collection: str) -> sqlite3.Row:
        if not isinstance(memory_id, str) or not memory_id:
            raise unprocessable("memory_id must be a non-empty string")
        row = conn.execute(
            "SELECT * FROM memories WHERE id=? AND collection=? ORDER BY seq LIMIT 1",
            (memory_id, collection),
        ).fetchone()
        if row is None:
            raise APIError(404, f"memory {memory_id!r} not found in collection {collection!r}")
        return row

    def _get_seq(self, conn: sqlite3.Connection, seq: int) -> dict[str, Any]:
        return localrows.decode(
            conn.execute("SELECT * FROM memories WHERE seq=?", (seq,)).fetchone()
        )

    def _set(
        self, conn: sqlite3.Connection, row: sqlite3.Row, values: dict[str, Any]
    ) -> dict[str, Any]:
        """Set typed fields (plus updated_at) on one row and return the memory."""
        values = dict(values)
        values["updated_at"] = _now()
        cols = dict(values)
        if "metadata" in cols:
            cols["metadata"] = localrows.dumps(cols["metadata"])
        for b in ("pinned", "archived"):
            if b in cols:
                cols[b] = int(cols[b])
        cols["updated_ts"] = localrows.to_epoch(values["updated_at"])
        cols["fidelity"] = localrows.set_fields(row["fidelity"], list(values))
        assign = ", ".join(f"{c}=?" for c in cols)
        conn.execute(f"UPDATE memories SET {assign} WHERE seq=?", [*cols.values(), row["seq"]])
        return self._get_seq(conn, row["seq"])

    # -- writes -----------------------------------------------------------------------------------

    @_api(write=True)
    def add(
        self,
        text: str,
        *,
        collection: str = "default",
        importance: float = 0.7,
        category: str = "other",
        metadata: dict[str, Any] | None = None,
        source: str = "sdk",
        container_tag: str | None = None,
    ) -> dict[str, Any]:
        check_request(self.limits, "add", [text], {"text": text, "metadata": metadata})
        mem, row = new_memory_row(
            self.limits,
            text,
            collection=collection,
            importance=importance,
            category=category,
            metadata=metadata,
            source=source,
            container_tag=container_tag,
            where="add",
            now=_now(),
        )
        with self._write() as conn:
            self._ensure_collection(conn, collection)
            self._insert(conn, [row])
        return mem

    @_api(write=True)
    def add_many(
        self,
        items: list[str | dict[str, Any]],
        *,
        collection: str = "default",
        container_tag: str | None = None,
        importance: float = 0.7,
        category: str = "other",
        source: str = "sdk",
    ) -> dict[str, Any]:
        if not isinstance(items, list):
            raise unprocessable("add_many: items must be a list")
        # one sizing of the request: for plain JSON it also gives every item's metadata size and
        # shows no item is nested too deep (`limits.plain_json`); otherwise each check as it was
        plain = plain_json(items)
        check_request(self.limits, "add_many", items, items, plain.size if plain else None)
        same_sizes = plain is not None and plain.same_floats
        shallow = plain is not None and plain.depth <= jsonio.MAX_DEPTH + 2  # list + item + 128
        now = _now()
        now_ts = localrows.to_epoch(now)
        ids = new_ids(len(items))
        rows: list[tuple[Any, ...]] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                item = {"text": item}
            if not isinstance(item, dict):
                raise unprocessable(f"items[{i}]: must be a string or an object")
            if not item.keys() <= _ITEM_FIELDS:
                unknown = sorted(set(item) - _ITEM_FIELDS)
                raise unprocessable(f"items[{i}]: unknown field {unknown[0]!r}")
            if not shallow and localrows.too_deep(item):  # depth, apart from the size limits
                raise unprocessable(f"items[{i}]: {jsonio.TOO_DEEP}")
            get = item.get
            metadata = get("metadata")
            meta_json = meta_size = None
            if same_sizes:  # plain: msgspec's text is the stored column and its length the size
                data = jsonio.dumps(metadata if metadata is not None else {})
                meta_json, meta_size = data.decode("utf-8"), len(data)
            text = get("text")
            item_importance = get("importance", importance)
            item_category = get("category", category)
            item_source = get("source", source)
            item_tag = get("container_tag", container_tag)
            meta_text = check_new_memory(
                self.limits,
                text,
                collection=collection,
                importance=item_importance,
                category=item_category,
                metadata=metadata,
                source=item_source,
                container_tag=item_tag,
                where=f"items[{i}]",
                metadata_json=meta_json,
                metadata_size=meta_size,
            )
            rows.append(
                localrows.fresh_row(
                    ids[i],
                    collection,
                    text,
                    item_importance,
                    item_category,
                    meta_text,
                    item_source,
                    item_tag,
                    now,
                    now_ts,
                )
            )
        if rows:
            # rows were encoded above, before the write lock: see `localdb.encoded_rows`
            with self._write() as conn:
                self._ensure_collection(conn, collection)
                self._insert(conn, rows)
        return {"created": len(rows), "ids": ids}

    @_api(write=True)
    def import_memories(
        self,
        memories: list[dict[str, Any]],
        *,
        collections: list[Any] | None = None,
        into_collection: str | None = None,
    ) -> dict[str, Any]:
        """Re-ingest dump memories. New ids (like the API, which re-embeds); fields kept otherwise.

        Skipped (counted, not an error): entries that are not objects or whose ``text`` is missing,
        not a string or blank. ``collections`` (names or objects, as in a dump) are created if
        missing. Returns ``{"imported", "skipped", "collections"}`` with the names of the collections
        that received memories or were created, in first-seen order.
        """
        if not isinstance(memories, list):
            raise unprocessable("import_memories: memories must be a list")
        if into_collection is not None and (
            not isinstance(into_collection, str) or not into_collection
        ):
            raise unprocessable("import_memories: into_collection must be a non-empty string")
        plain = plain_json(memories)  # one sizing of the request (see add_many)
        check_request(
            self.limits, "import_memories", memories, memories, plain.size if plain else None
        )
        same_sizes = plain is not None and plain.same_floats
        for i, mem in enumerate(memories):
            if isinstance(mem, dict):
                meta = mem.get("metadata")
                size = None
                if same_sizes and meta is not None and self.limits.max_metadata_bytes:
                    size = len(jsonio.dumps(meta))
                check_limits(
                    self.limits,
                    f"memories[{i}]",
                    text=mem.get("text"),
                    metadata=meta,
                    metadata_size=size,
                )
        shallow = plain is not None and plain.depth <= jsonio.MAX_DEPTH + 2
        now = _now()
        ids = new_ids(len(memories))
        rows = []
        touched: dict[str, None] = {}
        skipped = 0
        for i, mem in enumerate(memories):
            if not shallow and localrows.too_deep(mem):  # refused (422), never skipped
                raise unprocessable(f"memories[{i}]: {jsonio.TOO_DEEP}")
            text = mem.get("text") if isinstance(mem, dict) else None
            if not isinstance(text, str) or not text.strip():
                skipped += 1
                continue
            new = dict(mem)
            new["id"] = ids[i]
            coll = into_collection or mem.get("collection")
            if not isinstance(coll, str) or not coll:
                coll = "default"
            new["collection"] = coll
            for key, default in (
                ("importance", 0.7),
                ("category", "other"),
                ("metadata", {}),
                ("source", "import"),
                ("container_tag", None),
                ("pinned", False),
                ("archived", False),
                ("created_at", now),
                ("expires_at", None),
                ("superseded_by", None),
            ):
                new.setdefault(key, default)
            new["updated_at"] = now
            touched[coll] = None
            rows.append(new)
        params = encoded_rows(rows, depth_checked=True)  # each was checked above
        wanted = []
        for c in collections or []:
            name = collection_name(c)
            if name:
                wanted.append(name)
                touched.setdefault(name, None)
        with self._write() as conn:
            for name in touched:
                self._ensure_collection(conn, name)
            self._insert(conn, params)
        return {"imported": len(rows), "skipped": skipped, "collections": list(touched)}

    @_api(write=True)
    def update(
        self,
        memory_id: str,
        *,
        collection: str = "default",
        text: str | None = None,
        importance: float | None = None,
        category: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise unprocessable("update: text must be a non-empty string")
            values["text"] = text
        if importance is not None:
            if isinstance(importance, bool) or not isinstance(importance, (int, float)):
                raise unprocessable("update: importance must be a number between 0 and 1")
            if not 0 <= importance <= 1:
                raise unprocessable("update: importance must be a number between 0 and 1")
            values["importance"] = importance
        if category is not None:
            if not isinstance(category, str) or not category:
                raise unprocessable("update: category must be a non-empty string")
            values["category"] = category
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise unprocessable("update: metadata must be an object")
            if jsonio.value_too_deep(metadata):
                raise unprocessable(f"update: metadata {jsonio.TOO_DEEP}")
            values["metadata"] = metadata
        check_limits(self.limits, "update", text=text, metadata=metadata)
        check_request(self.limits, "update", [values], values)
        with self._write() as conn:
            row = self._row(conn, memory_id, collection)
            if not values:
                return localrows.decode(row)
            return self._set(conn, row, values)

    @_api(write=True)
    def move(
        self, memory_id: str, *, collection: str = "default", to_collection: str
    ) -> dict[str, Any]:
        if not isinstance(to_collection, str) or not to_collection:
            raise unprocessable("move: to_collection must be a non-empty string")
        with self._write() as conn:
            row = self._row(conn, memory_id, collection)
            self._ensure_collection(conn, to_collection)
            self._set(conn, row, {"collection": to_collection})
        return {"moved": True, "id": memory_id, "collection": to_collection}

    @_api(write=True)
    def delete(self, memory_id: str, *, collection: str = "default") -> dict[str, Any]:
        with self._write() as conn:
            row = self._row(conn, memory_id, collection)
            conn.execute("DELETE FROM memories WHERE seq=?", (row["seq"],))
        return {}

    @_api(write=True)
    def delete_collection(self, collection: str) -> dict[str, Any]:
        with self._write() as conn:
            listed = conn.execute(
                "SELECT 1 FROM collections WHERE name=?", (collection,)
            ).fetchone()
            cur = conn.execute("DELETE FROM memories WHERE collection=?", (collection,))
            if not listed and cur.rowcount == 0:
                raise APIError(404, f"collection {collection!r} not found")
            conn.execute("DELETE FROM collections WHERE name=?", (collection,))
        return {}

    @_api(write=True)
    def pin(
        self, memory_id: str, *, collection: str = "default", pinned: bool = True
    ) -> dict[str, Any]:
        with self._write() as conn:
            return self._set(conn, self._row(conn, memory_id, collection), {"pinned": bool(pinned)})

    @_api(write=True)
    def archive(
        self, memory_id: str, *, collection: str = "default", archived: bool = True
    ) -> dict[str, Any]:
        with self._write() as conn:
            return self._set(
                conn, self._row(conn, memory_id, collection), {"archived": bool(archived)}
            )

    @_api(write=True)
    def forget(
        self, query: str, *, collection: str = "default", min_score: float = 0.5, limit: int = 10
    ) -> dict[str, Any]:
        """Delete up to ``limit`` memories of ``collection`` whose FTS match scores >= min_score."""
        with self._write() as conn:
            hits = search_seqs(conn, query, collection=collection, limit=limit, min_score=min_score)
            conn.executemany("DELETE FROM memories WHERE seq=?", [(seq,) for seq, _ in hits])
        return {"deleted": len(hits)}

    # -- reads ------------------------------------------------------------------------------------

    @_api(write=False)
    def export_account(self) -> dict[str, Any]:
        with self._read() as conn:
            memories = [
                localrows.decode(r) for r in conn.execute("SELECT * FROM memories ORDER BY seq")
            ]
            collections = [
                localrows.loads(r[0])
                for r in conn.execute("SELECT raw FROM collections ORDER BY position")
            ]
            seeded = self._meta(conn, "seeded") == "1"
            tenant = self._meta(conn, "tenant")
            header = conn.execute("SELECT key, value FROM header ORDER BY position").fetchall()
        if not seeded:
            return {
                "tenant": tenant,
                "exported_at": _now(),
                "collections": collections,
                "memories": memories,
            }
        out: dict[str, Any] = {}
        for key, value in header:
            if key == "collections":
                out[key] = collections
            elif key == "memories":
                out[key] = memories
            else:
                out[key] = localrows.loads(value)
        return out

    @_api(write=False)
    def export_page(self, *, cursor: str | None = None, limit: int = 25_000) -> dict[str, Any]:
        """The memories a page at a time, as Arrow (`api.pages`; paging in `api.localpages`)."""
        with self._read() as conn:
            return localpages.read_page(conn, cursor, limit)

    @_api(write=False)
    def collections(self) -> list[dict[str, Any]]:
        """Listed collections (objects as stored; names given as strings become ``{"name": ...}``),
        then any collection that holds memories but is not listed."""
        with self._read() as conn:
            listed = conn.execute("SELECT name, raw FROM collections ORDER BY position").fetchall()
            used = [
                r[0]
                for r in conn.execute(
                    "SELECT collection FROM memories WHERE collection IS NOT NULL "
                    "GROUP BY collection ORDER BY min(seq)"
                )
            ]
        out: list[dict[str, Any]] = []
        seen = set()
        for name, raw in listed:
            value = localrows.loads(raw)
            out.append(dict(value) if isinstance(value, dict) else {"name": collection_name(value)})
            seen.add(name)
        out.extend({"name": c} for c in used if c not in seen)
        return out

    @_api(write=False)
    def list_memories(
        self,
        *,
        collection: str = "default",
        limit: int = 50,
        offset: int = 0,
        include_archived: bool = False,
    ) -> list[dict[str, Any]]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise unprocessable("list_memories: limit must be a non-negative integer")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise unprocessable("list_memories: offset must be a non-negative integer")
        archived = "" if include_archived else "AND coalesce(archived, 0) = 0"
        rows = self._conn().execute(
            f"SELECT * FROM memories WHERE collection=? {archived} {_ORDER} LIMIT ? OFFSET ?",
            (collection, limit, offset),
        )
        return [localrows.decode(r) for r in rows]

    @_api(write=False)
    def get(self, memory_id: str, *, collection: str = "default") -> dict[str, Any]:
        return localrows.decode(self._row(self._conn(), memory_id, collection))

    @_api(write=False)
    def health(self, *, collection: str = "default", stale_days: int = 90) -> dict[str, Any]:
        """Counts for one collection. ``total`` includes archived memories (as the API's
        ``admin_memory_health`` splits total into current + archived); ``stale``, ``expired``,
        ``needs_attention`` and ``categories`` look at non-archived memories only."""
        now = time.time()
        cutoff = now - float(stale_days) * 86400.0
        conn = self._conn()
        row = conn.execute(
            """
            SELECT count(*) AS total,
                   sum(coalesce(archived, 0) = 1) AS archived,
                   sum(coalesce(archived, 0) = 0 AND coalesce(updated_ts, created_ts) < :cutoff) AS stale,
                   sum(coalesce(archived, 0) = 0 AND expires_ts < :now) AS expired,
                   sum(coalesce(archived, 0) = 0 AND superseded_by IS NOT NULL) AS supersessions,
                   sum(coalesce(archived, 0) = 0 AND (
                       coalesce(updated_ts, created_ts) < :cutoff OR expires_ts < :now
                       OR superseded_by IS NOT NULL)) AS needs_attention
            FROM memories WHERE collection = :c
            """,
            {"c": collection, "cutoff": cutoff, "now": now},
        ).fetchone()
        cats = conn.execute(
            "SELECT category, count(*) FROM memories WHERE collection=? "
            "AND coalesce(archived, 0) = 0 GROUP BY category ORDER BY count(*) DESC, category",
            (collection,),
        ).fetchall()
        total = row["total"] or 0
        archived = row["archived"] or 0
        needs = row["needs_attention"] or 0
        return {
            "collection": collection,
            "total": total,
            "current": total - archived - needs,
            "archived": archived,
            "stale": row["stale"] or 0,
            "expired": row["expired"] or 0,
            "supersessions": row["supersessions"] or 0,
            "needs_attention": needs,
            "categories": {(c if c is not None else "null"): n for c, n in cats},
        }

    @_api(write=False)
    def search(
        self,
        query: str,
        *,
        collection: str | None = None,
        limit: int = 5,
        min_score: float = 0.3,
        mode: str = "hybrid",
        category: str | None = None,
        container_tag: str | None = None,
    ) -> list[dict[str, Any]]:
        """Full-text search (FTS5/BM25) standing in for the API's semantic/hybrid search: every
        ``mode`` is keyword search here. Results are memory dicts with a ``score`` (0..1)."""
        with self._read() as conn:
            hits = search_seqs(
                conn,
                query,
                collection=collection,
                limit=limit,
                min_score=min_score,
                category=category,
                container_tag=container_tag,
            )
            return [{**self._get_seq(conn, seq), "score": score} for seq, score in hits]

    def count(self, collection: str | None = None) -> int:
        """Number of memories (all, or in one collection). For tests and verification."""
        conn = self._conn()
        if collection is None:
            return conn.execute("SELECT count(*) FROM memories").fetchone()[0]
        return conn.execute(
            "SELECT count(*) FROM memories WHERE collection=?", (collection,)
        ).fetchone()[0]

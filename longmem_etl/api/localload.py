"""Seeding the embedded store: a dump loaded verbatim, not through the API.

``seed_dump`` / ``seed_source`` keep ids, timestamps, every field (unknown ones too), the collection
list and the top-level keys in order, so ``export_account()`` gives the same dump back key for key.
They check none of the store's limits and are never faulted: seeding builds a fixture or restores a
backup for offline use, it is not a client call. ``local_seed.seed_from_file`` feeds them from a
dump file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from longmem_etl.api import localrows
from longmem_etl.api.localdb import TRIGGERS, StoreFile, encoded_rows
from longmem_etl.errors import BadInput
from longmem_etl.names import collection_name, tenant_name


class SeedableStore(StoreFile):
    """A store file that can be loaded verbatim from a dump (the seeding half of ``LocalStore``)."""

    uri: str

    @property
    def tenant(self) -> str:
        return self._meta(self._conn(), "tenant") or self.path.stem

    def seed_dump(self, dump: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Load a dump exactly as it is: ids, timestamps, every field (unknown ones too), the
        collection list and the top-level keys in order, so ``export_account()`` gives the same dump
        back key for key.

        Refuses a store that already holds data unless ``replace`` (which empties it first, in the
        same transaction). Not subject to injected faults. Returns counts.
        """
        if not isinstance(dump, dict):
            raise BadInput(f"{self.uri}: a dump must be a JSON object")
        memories = dump.get("memories", [])
        collections = dump.get("collections", [])
        if not isinstance(memories, list):
            raise BadInput(f"{self.uri}: dump 'memories' must be a list")
        if not isinstance(collections, list):
            raise BadInput(f"{self.uri}: dump 'collections' must be a list")
        return self._seed(list(dump.items()), collections, [memories], replace=replace)

    def seed_source(
        self,
        header: dict[str, Any],
        collections: list[Any] | None,
        batches: Iterable[list[dict[str, Any]]],
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        """``seed_dump`` for a dump read in batches (bounded memory): ``header`` is every top-level
        key but memories/collections, ``collections`` None when the dump had none. The export puts
        ``collections`` and ``memories`` after the header keys."""
        items = list(header.items())
        if collections is not None:
            items.append(("collections", None))
        items.append(("memories", None))
        return self._seed(items, collections or [], batches, replace=replace)

    def _seed(
        self,
        top: list[tuple[str, Any]],
        collections: list[Any],
        batches: Iterable[list[Any]],
        *,
        replace: bool,
    ) -> dict[str, Any]:
        header = [
            (pos, key, None if key in ("memories", "collections") else localrows.dumps(value))
            for pos, (key, value) in enumerate(top)
        ]
        tenant = tenant_name(dict(top).get("tenant"))
        count = 0
        with self._write() as conn:
            busy = conn.execute(
                "SELECT (SELECT count(*) FROM memories) + (SELECT count(*) FROM collections)"
            ).fetchone()[0]
            if (busy or self._meta(conn, "seeded") == "1") and not replace:
                raise BadInput(
                    f"{self.uri}: store already holds data; seed an empty store or pass replace"
                )
            for trig in ("memories_ai", "memories_ad", "memories_au"):
                conn.execute(f"DROP TRIGGER IF EXISTS {trig}")
            conn.execute("DELETE FROM memories")
            conn.execute("DELETE FROM collections")
            conn.execute("DELETE FROM header")
            conn.execute("DELETE FROM sqlite_sequence WHERE name='memories'")
            for batch in batches:
                rows = []
                for mem in batch:
                    if not isinstance(mem, dict):
                        raise BadInput(f"dump: memories[{count}]: not an object")
                    rows.append(mem)
                    count += 1
                self._insert(conn, encoded_rows(rows))
            conn.executemany(
                "INSERT INTO collections(position, name, raw) VALUES (?, ?, ?)",
                [(i, collection_name(c), localrows.dumps(c)) for i, c in enumerate(collections)],
            )
            conn.executemany("INSERT INTO header(position, key, value) VALUES (?, ?, ?)", header)
            conn.execute("INSERT INTO memories_fts(memories_fts) VALUES ('rebuild')")
            for stmt in TRIGGERS.split("END;")[:-1]:
                conn.execute(stmt + "END;")
            conn.execute("UPDATE meta SET value='1' WHERE key='seeded'")
            if tenant:
                conn.execute("UPDATE meta SET value=? WHERE key='tenant'", (tenant,))
        return {"tenant": self.tenant, "memories": count, "collections": len(collections)}

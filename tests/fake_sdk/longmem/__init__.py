"""A test double shaped like the official ``longmem`` SDK (same module name, classes, constructor and
method signatures), backed by the real embedded store so it behaves like a server.

Used by the adapter and contract tests: put ``tests/fake_sdk`` first on ``sys.path`` (or PYTHONPATH
for subprocesses). It records every constructor call and method call, and turns the store's errors
into what the SDK raises: ``LongmemAPIError`` (``status``, ``headers`` with Retry-After) for non-2xx
answers and ``LongmemError`` caused by ``TimeoutError`` for a timeout. The backend is the URI in
``FAKE_LONGMEM_BACKEND`` (any ``local:`` URI, fault options included), or ``BACKEND`` if set.
Like the real SDK, ``add_many`` chunks to 100 items a call. With ``FAKE_LONGMEM_ECHO_KEY=1`` every
error message echoes the API key and a credential-bearing URL, as a careless server might.
"""

from __future__ import annotations

import os
from typing import Any

from longmem_etl.api.endpoints import open_endpoint
from longmem_etl.errors import AmbiguousError, APIError

BACKEND: str | None = None
INSTANCES: list[dict[str, Any]] = []
CALLS: list[tuple[str, tuple, dict]] = []
_STORES: dict[str, Any] = {}


class LongmemError(Exception):
    """Config / network errors."""


class LongmemAPIError(LongmemError):
    """Non-2xx answer from the API."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _backend() -> Any:
    uri = BACKEND or os.environ.get("FAKE_LONGMEM_BACKEND")
    if not uri:
        raise LongmemError("fake SDK: no backend configured")
    if uri not in _STORES:
        _STORES[uri] = open_endpoint(uri)
    return _STORES[uri]


def reset() -> None:
    global BACKEND
    BACKEND = None
    INSTANCES.clear()
    CALLS.clear()
    for s in _STORES.values():
        s.close()
    _STORES.clear()


class Longmem:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
    ) -> None:
        api_key = api_key or os.environ.get("LONGMEM_API_KEY")
        if not api_key:
            raise LongmemError("no API key")
        self.api_key = api_key
        self.base_url = base_url or os.environ.get("LONGMEM_BASE_URL") or "https://rememberos.ai"
        self.max_retries = max_retries
        INSTANCES.append(
            {
                "api_key": api_key,
                "base_url": base_url,
                "timeout": timeout,
                "max_retries": max_retries,
            }
        )

    def _do(self, name: str, *args: Any, **kwargs: Any) -> Any:
        CALLS.append((name, args, kwargs))
        try:
            return getattr(_backend(), name)(*args, **kwargs)
        except APIError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
            raise LongmemAPIError(exc.status, self._echo(exc.message), headers) from None
        except AmbiguousError as exc:
            raise LongmemError(self._echo(f"request timed out: {exc}")) from TimeoutError(
                "timed out"
            )

    def _echo(self, message: str) -> str:
        if os.environ.get("FAKE_LONGMEM_ECHO_KEY") != "1":
            return message
        return (
            f"{message} [request with Authorization: Bearer {self.api_key} to "
            f"https://svc:{self.api_key}@api.example.com/v1/add?api_key={self.api_key}&page=2]"
        )

    def add(
        self,
        text,
        *,
        collection="default",
        importance=0.7,
        category="other",
        metadata=None,
        source="sdk",
        container_tag=None,
    ):
        return self._do(
            "add",
            text,
            collection=collection,
            importance=importance,
            category=category,
            metadata=metadata,
            source=source,
            container_tag=container_tag,
        )

    def add_many(
        self,
        items,
        *,
        collection="default",
        container_tag=None,
        importance=0.7,
        category="other",
        source="sdk",
    ):
        created, ids = 0, []
        for i in range(0, max(len(items), 1), 100):
            r = self._do(
                "add_many",
                items[i : i + 100],
                collection=collection,
                container_tag=container_tag,
                importance=importance,
                category=category,
                source=source,
            )
            created += r["created"]
            ids += r["ids"]
        return {"created": created, "ids": ids}

    def import_memories(self, memories, *, collections=None, into_collection=None):
        return self._do(
            "import_memories", memories, collections=collections, into_collection=into_collection
        )

    def export_account(self):
        return self._do("export_account")

    def collections(self):
        return self._do("collections")

    def list_memories(self, *, collection="default", limit=50, offset=0, include_archived=False):
        return self._do(
            "list_memories",
            collection=collection,
            limit=limit,
            offset=offset,
            include_archived=include_archived,
        )

    def get(self, memory_id, *, collection="default"):
        return self._do("get", memory_id, collection=collection)

    def update(
        self,
        memory_id,
        *,
        collection="default",
        text=None,
        importance=None,
        category=None,
        metadata=None,
    ):
        return self._do(
            "update",
            memory_id,
            collection=collection,
            text=text,
            importance=importance,
            category=category,
            metadata=metadata,
        )

    def move(self, memory_id, *, collection="default", to_collection):
        return self._do("move", memory_id, collection=collection, to_collection=to_collection)

    def delete(self, memory_id, *, collection="default"):
        return self._do("delete", memory_id, collection=collection)

    def delete_collection(self, collection):
        return self._do("delete_collection", collection)

    def pin(self, memory_id, *, collection="default", pinned=True):
        return self._do("pin", memory_id, collection=collection, pinned=pinned)

    def archive(self, memory_id, *, collection="default", archived=True):
        return self._do("archive", memory_id, collection=collection, archived=archived)

    def health(self, *, collection="default", stale_days=90):
        return self._do("health", collection=collection, stale_days=stale_days)

    def search(
        self,
        query,
        *,
        collection=None,
        limit=5,
        min_score=0.3,
        mode="hybrid",
        category=None,
        container_tag=None,
    ):
        return self._do(
            "search",
            query,
            collection=collection,
            limit=limit,
            min_score=min_score,
            mode=mode,
            category=category,
            container_tag=container_tag,
        )

    def forget(self, query, *, collection="default", min_score=0.5, limit=10):
        return self._do("forget", query, collection=collection, min_score=min_score, limit=limit)

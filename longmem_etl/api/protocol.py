"""`LongmemAPI`: the subset of the official SDK the toolkit calls, with the SDK's own names,
keyword-only arguments and return shapes (see shared/reference/longmem-python-sdk.txt).

Anything that speaks this protocol can be a backup source or a migration target. Implementations raise
`longmem_etl.errors.APIError` (status, retryable, retry_after), `RateLimited`, `AmbiguousError` and
`Unsupported` — never SDK-specific exceptions — so the engine above them has one error model.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

Memory = dict[str, Any]


@runtime_checkable
class LongmemAPI(Protocol):
    """The calls longmem-etl makes. Return shapes are the SDK's."""

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
    ) -> Memory: ...

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
        """``{"created": n, "ids": [...]}``; at most 100 items a call."""
        ...

    def import_memories(
        self,
        memories: list[Memory],
        *,
        collections: list[Any] | None = None,
        into_collection: str | None = None,
    ) -> dict[str, Any]:
        """``{"imported", "skipped", "collections"}``."""
        ...

    def export_account(self) -> dict[str, Any]:
        """``{"tenant", "collections", "memories", ...}``."""
        ...

    def export_page(self, *, cursor: str | None = None, limit: int = 25_000) -> dict[str, Any]:
        """Not in the SDK: the account's memories a page at a time, as Arrow (``api/pages.py``):
        ``{"memories": <pages.EXPORT_PAGE table>, "next": <cursor or None>}``. Readers of the
        whole target (verification, holdings, repair) use it to hold one page, not the account."""
        ...

    def collections(self) -> list[dict[str, Any]]: ...

    def list_memories(
        self,
        *,
        collection: str = "default",
        limit: int = 50,
        offset: int = 0,
        include_archived: bool = False,
    ) -> list[Memory]: ...

    def get(self, memory_id: str, *, collection: str = "default") -> Memory: ...

    def update(
        self,
        memory_id: str,
        *,
        collection: str = "default",
        text: str | None = None,
        importance: float | None = None,
        category: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Memory: ...

    def move(
        self, memory_id: str, *, collection: str = "default", to_collection: str
    ) -> dict[str, Any]: ...

    def delete(self, memory_id: str, *, collection: str = "default") -> dict[str, Any]: ...

    def delete_collection(self, collection: str) -> dict[str, Any]: ...

    def pin(
        self, memory_id: str, *, collection: str = "default", pinned: bool = True
    ) -> Memory: ...

    def archive(
        self, memory_id: str, *, collection: str = "default", archived: bool = True
    ) -> Memory: ...

    def health(self, *, collection: str = "default", stale_days: int = 90) -> dict[str, Any]: ...

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
    ) -> list[dict[str, Any]]: ...

    def forget(
        self, query: str, *, collection: str = "default", min_score: float = 0.5, limit: int = 10
    ) -> dict[str, Any]: ...

"""The official ``longmem`` SDK behind ``LongmemAPI`` (``https://HOST``).

Only this module reads an API key, from the environment variable the user names, once, when the
endpoint is opened; it is handed to the SDK and never logged, echoed or written.

Two SDK clients share the key: reads (export, list, get, health, search, collections) keep the SDK's
own retries (``max_retries=2``), writes use ``max_retries=0`` so that the toolkit's migration engine
owns every retry: it must see a timeout to reconcile before re-sending, and it counts 429s to lower
its concurrency. SDK errors become the toolkit's: ``LongmemAPIError`` -> ``APIError(status)`` /
``RateLimited`` (with Retry-After when the exception carries it); on writes, timeouts, network errors
and 500/502/504/408 answers -> ``AmbiguousError`` (the server may have acted); other ``LongmemError``
-> ``APIError(400)`` (client-side refusal, not retryable).
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from longmem_etl.api.keys import DEFAULT_KEY_ENV, key_fingerprint, missing_key_message
from longmem_etl.errors import AmbiguousError, APIError, BadInput, RateLimited
from longmem_etl.secrets import watch_env

INSTALL_HINT = "pip install 'longmem-etl[api]'"
REQUIRED_METHODS = ("add", "add_many", "import_memories", "export_account", "list_memories")
AMBIGUOUS_STATUSES = frozenset({408, 500, 502, 504})
WRITE_TIMEOUT_S = 60.0

F = TypeVar("F", bound=Callable[..., Any])


def load_sdk() -> Any:
    """Import the official SDK, or BadInput with the exact install command."""
    try:
        mod = importlib.import_module("longmem")
    except ImportError:
        raise BadInput(
            f"the official Longmem SDK is not installed; install it with: {INSTALL_HINT}"
        ) from None
    cls = getattr(mod, "Longmem", None)
    ok = (
        isinstance(cls, type)
        and all(callable(getattr(cls, m, None)) for m in REQUIRED_METHODS)
        and isinstance(getattr(mod, "LongmemError", None), type)
        and isinstance(getattr(mod, "LongmemAPIError", None), type)
    )
    if not ok:
        where = getattr(mod, "__file__", None) or "unknown location"
        raise BadInput(
            f"the installed 'longmem' package ({where}) is not the official Longmem SDK "
            f"(no Longmem client with export_account/add_many); install it with: {INSTALL_HINT}"
        )
    return mod


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    if value is None:
        headers = getattr(exc, "headers", None)
        if headers is not None:
            try:
                value = headers.get("Retry-After") or headers.get("retry-after")
            except AttributeError:
                value = None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None  # an HTTP-date: let the engine's own backoff decide


def _is_network(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (TimeoutError, socket.timeout, ConnectionError, OSError)):
            return True
        e = e.__cause__ or e.__context__
    text = str(exc).lower()
    return any(w in text for w in ("timed out", "timeout", "connection", "network", "urlopen"))


def _call(*, write: bool) -> Callable[[F], F]:
    """Map SDK exceptions to the toolkit's error types around one SDK call."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: SDKEndpoint, *args: Any, **kwargs: Any) -> Any:
            sdk = self._sdk
            name = fn.__name__
            try:
                return fn(self, *args, **kwargs)
            except sdk.LongmemAPIError as exc:
                status = getattr(exc, "status", None)
                status = int(status) if isinstance(status, int) else 500
                msg = f"{name}: {exc}"
                if status == 429:
                    raise RateLimited(msg, retry_after=_retry_after(exc)) from None
                if write and status in AMBIGUOUS_STATUSES:
                    raise AmbiguousError(
                        f"{msg} (HTTP {status}; the write may have happened)"
                    ) from None
                raise APIError(status, msg, retry_after=_retry_after(exc)) from None
            except (sdk.LongmemError, OSError) as exc:
                if _is_network(exc):
                    if write:
                        raise AmbiguousError(
                            f"{name}: network error, the write may have happened: {exc}"
                        ) from None
                    raise APIError(503, f"{name}: network error: {exc}") from None
                raise APIError(400, f"{name}: {exc}") from None

        return wrapper  # type: ignore[return-value]

    return deco


class SDKEndpoint:
    """``LongmemAPI`` over the official SDK. Arguments pass through with the SDK's names."""

    def __init__(self, base_url: str, *, key_env: str = DEFAULT_KEY_ENV) -> None:
        watch_env(key_env)  # whatever the server echoes back, this key's value is masked
        self._sdk = load_sdk()
        key = os.environ.get(key_env)
        if not key:
            raise BadInput(missing_key_message(key_env))
        self.base_url = base_url
        self.uri = base_url
        self.key_env = key_env
        self.key_fingerprint = key_fingerprint(key)
        try:
            self._read = self._sdk.Longmem(api_key=key, base_url=base_url)
            self._write = self._sdk.Longmem(
                api_key=key, base_url=base_url, max_retries=0, timeout=WRITE_TIMEOUT_S
            )
        except self._sdk.LongmemError as exc:
            raise BadInput(f"{base_url}: cannot configure the Longmem SDK: {exc}") from None
        del key

    def __repr__(self) -> str:
        return f"SDKEndpoint({self.base_url!r}, key_env={self.key_env!r})"

    def close(self) -> None:
        for client in (self._read, self._write):
            close = getattr(client, "close", None)
            if callable(close):
                close()

    # -- writes -----------------------------------------------------------------------------------

    @_call(write=True)
    def add(self, text: str, **kwargs: Any) -> dict[str, Any]:
        return self._write.add(text, **kwargs)

    @_call(write=True)
    def add_many(self, items: list[Any], **kwargs: Any) -> dict[str, Any]:
        return self._write.add_many(items, **kwargs)

    @_call(write=True)
    def import_memories(self, memories: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        return self._write.import_memories(memories, **kwargs)

    @_call(write=True)
    def update(self, memory_id: str, **kwargs: Any) -> dict[str, Any]:
        return self._write.update(memory_id, **kwargs)

    @_call(write=True)
    def move(self, memory_id: str, **kwargs: Any) -> dict[str, Any]:
        return self._write.move(memory_id, **kwargs)

    @_call(write=True)
    def delete(self, memory_id: str, **kwargs: Any) -> dict[str, Any]:
        return self._write.delete(memory_id, **kwargs)

    @_call(write=True)
    def delete_collection(self, collection: str) -> dict[str, Any]:
        return self._write.delete_collection(collection)

    @_call(write=True)
    def pin(self, memory_id: str, **kwargs: Any) -> dict[str, Any]:
        return self._write.pin(memory_id, **kwargs)

    @_call(write=True)
    def archive(self, memory_id: str, **kwargs: Any) -> dict[str, Any]:
        return self._write.archive(memory_id, **kwargs)

    @_call(write=True)
    def forget(self, query: str, **kwargs: Any) -> dict[str, Any]:
        return self._write.forget(query, **kwargs)

    # -- reads ------------------------------------------------------------------------------------

    @_call(write=False)
    def export_account(self) -> dict[str, Any]:
        return self._read.export_account()

    def export_page(self, *, cursor: str | None = None, limit: int = 25_000) -> dict[str, Any]:
        """The hosted API exports in one call: its whole export is one page (``next`` None)."""
        if cursor is not None:
            raise APIError(422, "export_page: this endpoint has no page after its only one")
        from longmem_etl.api.pages import page_of

        memories = self.export_account().get("memories") or []
        return {"memories": page_of(_drained(memories)), "next": None}

    @_call(write=False)
    def collections(self) -> list[dict[str, Any]]:
        return self._read.collections()

    @_call(write=False)
    def list_memories(self, **kwargs: Any) -> list[dict[str, Any]]:
        return self._read.list_memories(**kwargs)

    @_call(write=False)
    def get(self, memory_id: str, **kwargs: Any) -> dict[str, Any]:
        return self._read.get(memory_id, **kwargs)

    @_call(write=False)
    def health(self, **kwargs: Any) -> dict[str, Any]:
        return self._read.health(**kwargs)

    @_call(write=False)
    def search(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
        return self._read.search(query, **kwargs)


def _drained(rows: list) -> Any:
    """Yield a list's items, dropping each once yielded (the dicts go as the page is built)."""
    for i in range(len(rows)):
        row, rows[i] = rows[i], None
        yield row

"""What the embedded store cannot do offline: the SDK calls that need the hosted service's models,
its managed connectors or cross-tenant admin rights.

Each is present (so ``LocalStore`` has the SDK's whole surface and a caller learns *why*) and raises
``Unsupported`` naming the call and the reason. The stubs are generated from one table, so adding a
call the SDK gained is one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from longmem_etl.errors import Unsupported

_CONNECTORS = "syncs managed connectors server-side"
_ADMIN = "is a cross-tenant admin call"

#: SDK method -> (name shown in the message, why it cannot run offline).
OFFLINE_CALLS: dict[str, tuple[str, str]] = {
    "remember": ("remember", "extracts facts with an LLM"),
    "summary": ("summary", "writes a briefing with an LLM"),
    "profile": ("profile", "builds a profile with an LLM"),
    "related": ("related", "needs embeddings"),
    "dedup": ("dedup", "needs embeddings; use a transform spec's dedup step"),
    "contradictions": ("contradictions", "needs an LLM"),
    "archive_stale": ("archive_stale", "is not implemented offline"),
    **{
        m: ("connections", _CONNECTORS)
        for m in (
            "create_connection",
            "list_connections",
            "get_connection",
            "sync_connection",
            "connection_runs",
            "delete_connection",
        )
    },
    **{
        m: ("admin", _ADMIN)
        for m in ("connector_health", "connector_status", "admin_memory_health")
    },
}


def unsupported(uri: str, name: str, why: str) -> Unsupported:
    """The error an offline-only call raises, naming the store and pointing at https."""
    return Unsupported(
        f"{name}() is not available on the embedded local store ({uri}): it {why}; "
        "use an https:// endpoint"
    )


def _stub(name: str, why: str) -> Callable[..., Any]:
    def call(self: Any, *a: Any, **k: Any) -> Any:
        raise unsupported(self.uri, name, why)

    call.__name__ = name
    call.__doc__ = f"Not available offline: {name}() {why}."
    return call


class OfflineCalls:
    """Mixin: every ``OFFLINE_CALLS`` method raising ``Unsupported`` (needs ``self.uri``)."""

    uri: str


for _method, (_name, _why) in OFFLINE_CALLS.items():
    setattr(OfflineCalls, _method, _stub(_name, _why))

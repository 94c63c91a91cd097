"""What the embedded store refuses, in one place: text length, items per call, request and
metadata bytes.

The hosted API documents none of these except the 100-item batch of ``add_many``; the embedded
store picks its own, and says so. Every write path (``add``, ``add_many``, ``import_memories``,
``update``) checks the same `StoreLimits` and answers 422 naming the limit; ``seed_dump`` /
``local seed`` is the one explicit verbatim restore and checks none. Each limit is a URI query
parameter, so a test (or a user mirroring a stricter server) can set it:

    local:PATH?max_text_chars=100000&max_items=100&max_request_bytes=16777216&max_metadata_bytes=262144

``0`` switches a limit off. Sizes are bytes of compact UTF-8 JSON (what a client sends); text
length is in characters (Unicode code points). `migrate --dry-run` checks every planned item
against the target's known limits (`refusal`) before any call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from longmem_etl.errors import BadInput

LIMIT_KEYS = ("max_text_chars", "max_items", "max_request_bytes", "max_metadata_bytes")


# ``json.dumps`` with options builds a new encoder per call, which cost more than the encoding of
# a small metadata object; the store sizes every item's metadata and every request with this one.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def json_bytes(value: Any) -> int:
    """Size of ``value`` as compact UTF-8 JSON, as a client would send it."""
    return len(_COMPACT.encode(value).encode("utf-8"))


@dataclass(frozen=True)
class StoreLimits:
    """The embedded store's limits (defaults below); 0 means no limit."""

    max_text_chars: int = 100_000
    max_items: int = 100
    max_request_bytes: int = 16 * 1024 * 1024
    max_metadata_bytes: int = 256 * 1024

    @classmethod
    def from_query(cls, params: dict[str, str], *, where: str) -> StoreLimits:
        """The ``max_*`` parameters of a ``local:`` URI; bad values -> BadInput naming them."""
        values: dict[str, int] = {}
        for f in fields(cls):
            if f.name not in params:
                continue
            text = params[f.name]
            try:
                value = int(text)
            except ValueError:
                raise BadInput(f"{where}: {f.name}={text!r} is not a whole number") from None
            if value < 0:
                raise BadInput(f"{where}: {f.name}={text!r} must be >= 0 (0 = no limit)")
            values[f.name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # -- the checks every write path shares (each returns a reason, or None) ------------------

    def text_problem(self, text: str) -> str | None:
        if self.max_text_chars and len(text) > self.max_text_chars:
            return (
                f"text has {len(text)} characters, over the target's limit of "
                f"{self.max_text_chars} (max_text_chars)"
            )
        return None

    def metadata_problem(self, metadata: Any) -> str | None:
        if self.max_metadata_bytes and metadata is not None:
            n = json_bytes(metadata)
            if n > self.max_metadata_bytes:
                return (
                    f"metadata is {n} bytes of JSON, over the target's limit of "
                    f"{self.max_metadata_bytes} (max_metadata_bytes)"
                )
        return None

    def items_problem(self, n: int) -> str | None:
        if self.max_items and n > self.max_items:
            return f"at most {self.max_items} items per request (got {n}) (max_items)"
        return None

    def request_problem(self, payload: Any) -> str | None:
        if self.max_request_bytes:
            n = json_bytes(payload)
            if n > self.max_request_bytes:
                return (
                    f"request is {n} bytes of JSON, over the target's limit of "
                    f"{self.max_request_bytes} (max_request_bytes)"
                )
        return None

    def refusal(self, item: dict[str, Any]) -> str | None:
        """Why the target would refuse this one item even when sent alone, or None."""
        text = item.get("text")
        if isinstance(text, str):
            why = self.text_problem(text)
            if why:
                return why
        why = self.metadata_problem(item.get("metadata"))
        if why:
            return why
        return self.request_problem([item])

"""How a migrated memory is recognised in the target: a provenance marker, or a content fingerprint.

Exactly-once needs a way to ask the target "is this source memory already here?" without trusting
ids (the target mints new ones). Every item we send carries, in its metadata,

    metadata["_longmem_etl"] = {"source_id": <source memory id>, "migration": <migration id>}

(``PROVENANCE_KEY``). With ``--no-provenance`` nothing is added and a memory is recognised by its
content fingerprint instead: sha256 over collection, container_tag and whitespace-normalised text.
Fingerprints cannot tell two identical source memories apart, so reconciliation and verification
count them as a multiset.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

PROVENANCE_KEY = "_longmem_etl"
"""The metadata key holding ``{"source_id", "migration"}`` on every item a migration sends."""

ORIGINAL_METADATA_KEY = "_original_metadata"
"""Where a non-object source ``metadata`` value is kept when the marker has to be added."""


def normalise_text(text: Any) -> str:
    """Unicode NFC, whitespace runs collapsed, ends stripped: what a server may legitimately change."""
    if text is None:
        return ""
    return " ".join(unicodedata.normalize("NFC", str(text)).split())


def fingerprint(collection: Any, container_tag: Any, text: Any) -> str:
    """Content identity of a memory within its collection and container tag (hex sha256)."""
    h = hashlib.sha256()
    for part in (collection or "default", container_tag or "", normalise_text(text)):
        h.update(str(part).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def parse_metadata(value: Any) -> Any:
    """Metadata as a Python value: backends and snapshots may hand it over as JSON text."""
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def with_marker(metadata: Any, source_id: str, migration_id: str) -> dict[str, Any]:
    """A copy of ``metadata`` carrying the provenance marker (never mutates the source's dict).

    ``metadata`` is the dump's value as is (a string stays a string, even one that looks like JSON)."""
    meta = metadata
    if meta is None:
        out: dict[str, Any] = {}
    elif isinstance(meta, dict):
        out = dict(meta)
    else:  # a list/string/number: keep it whole next to the marker
        out = {ORIGINAL_METADATA_KEY: meta}
    out[PROVENANCE_KEY] = {"source_id": source_id, "migration": migration_id}
    return out


def marker_of(metadata: Any) -> tuple[str | None, str | None]:
    """``(source_id, migration_id)`` from a target memory's metadata, or ``(None, None)``."""
    meta = parse_metadata(metadata)
    if isinstance(meta, dict):
        mark = meta.get(PROVENANCE_KEY)
        if isinstance(mark, dict):
            sid, mig = mark.get("source_id"), mark.get("migration")
            return (str(sid) if sid is not None else None, str(mig) if mig is not None else None)
    return (None, None)

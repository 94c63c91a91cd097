"""How a dump names its tenant and its collections: read one way everywhere.

A dump's ``tenant`` is a string, or an object whose ``id``/``slug``/``name`` names it (an integer
counts, as text). A ``collections`` entry is a string, or an object whose ``name``/``id``/``slug``/
``collection`` (first string found) names it. The snapshot writer, the local store, backup's count
check and seeding all call these, so a name read by one is the name the others see.
"""

from __future__ import annotations

from typing import Any

_TENANT_KEYS = ("id", "slug", "name")
_COLLECTION_KEYS = ("name", "id", "slug", "collection")


def tenant_name(value: Any) -> str | None:
    """A dump's tenant as a name: a string, or an object's id/slug/name; None when it has none."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, dict):
        for key in _TENANT_KEYS:
            v = value.get(key)
            if isinstance(v, str) and v.strip():
                return v
            if isinstance(v, int) and not isinstance(v, bool):
                return str(v)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def collection_name(raw: Any) -> str | None:
    """One ``collections`` entry's name: the string, or an object's first string name key."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict):
        for key in _COLLECTION_KEYS:
            if isinstance(raw.get(key), str):
                return raw[key]
    return None


def collection_names(entries: Any) -> list[str]:
    """The distinct names of a ``collections`` list, in order (unnamed entries left out)."""
    names: dict[str, None] = {}
    for entry in entries if isinstance(entries, list) else []:
        name = collection_name(entry)
        if name is not None:
            names.setdefault(name, None)
    return list(names)

"""Declarative cleaning: a TOML spec of steps compiled to DuckDB SQL; every removed row is accounted
for in ``rejected`` (DESIGN §5). Entry points: `load_spec`, `apply_spec`, `clean_snapshot`."""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that `longmem-etl --help` and light callers do not pay for DuckDB/pyarrow.
_EXPORTS = {
    "Applied": "longmem_etl.transforms.engine",
    "Report": "longmem_etl.transforms.engine",
    "Spec": "longmem_etl.transforms.spec",
    "Step": "longmem_etl.transforms.spec",
    "StepReport": "longmem_etl.transforms.engine",
    "apply_spec": "longmem_etl.transforms.engine",
    "clean_snapshot": "longmem_etl.transforms.run",
    "load_spec": "longmem_etl.transforms.spec",
    "parse_spec": "longmem_etl.transforms.spec",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)

"""Declarative cleaning: a TOML spec of steps compiled to DuckDB SQL; every removed row is accounted
for in ``rejected`` (`docs/spec.md`, `docs/steps.md`). Entry points: `load_spec`, `apply_spec`, `clean_snapshot`."""

from __future__ import annotations

from longmem_etl._lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)

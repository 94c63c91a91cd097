"""Declarative cleaning: a TOML spec of steps compiled to DuckDB SQL; every removed row is accounted
for in ``rejected`` (DESIGN §5). Entry points: `load_spec`, `apply_spec`, `clean_snapshot`."""

from longmem_etl.transforms.engine import Applied, Report, StepReport, apply_spec
from longmem_etl.transforms.spec import Spec, Step, load_spec, parse_spec

__all__ = [
    "Applied",
    "Report",
    "Spec",
    "Step",
    "StepReport",
    "apply_spec",
    "load_spec",
    "parse_spec",
]

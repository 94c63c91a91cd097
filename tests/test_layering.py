"""House rules that keep one source of truth and no import cycles (issue 12's "one of each")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = [*(ROOT / "longmem_etl").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (lazy imports count)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_pipelines_modules_import_each_other_without_cycles() -> None:
    """e.g. resources.py calls seeding.py; seeding needs only the library, never the resources."""
    files = {_module(p): p for p in (ROOT / "pipelines").rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return seen

    cycles = sorted(m for m in graph if m in reach(m) and m != "pipelines")
    assert cycles == [], cycles


def test_the_default_key_variable_is_named_once() -> None:
    spelled = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in CODE
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if '"LONGMEM_API_KEY"' in line
    ]
    assert spelled == ["longmem_etl/api/keys.py:8"], spelled


def test_dump_suffixes_are_listed_once() -> None:
    """A tuple/dict literal naming two or more dump suffixes lives only in dumps/formats.py."""
    literal = re.compile(r'"\.json(l)?(\.gz|\.zst)?"\s*[,:]\s*(\(|"\.json)')
    found = sorted(
        str(p.relative_to(ROOT))
        for p in CODE
        if literal.search(p.read_text()) and p.name != "formats.py"
    )
    assert found == [], found


def test_iso_timestamps_are_parsed_one_way() -> None:
    """The spec's `now`, the embedded store's ordering and the dump reader agree on every value."""
    from datetime import datetime, timezone

    import pytest

    from longmem_etl.api.localrows import to_epoch
    from longmem_etl.errors import BadInput
    from longmem_etl.timestamps import parse_timestamp, to_datetime
    from longmem_etl.transforms.spec import parse_instant

    text = "2025-06-01 14:30:05.25+02:00"
    want = datetime(2025, 6, 1, 12, 30, 5, 250000, tzinfo=timezone.utc)
    assert parse_instant(text) == to_datetime(text) == want
    assert to_epoch(text) == want.timestamp() == parse_timestamp(text)[0] / 1e6
    for odd in ("20250601T120000Z", "2025-06-01T12", "June 1st"):  # the dump reader refuses these
        with pytest.raises(ValueError):
            parse_timestamp(odd)
        with pytest.raises(BadInput):
            parse_instant(odd)
        assert to_epoch(odd) is None
    uses = [str(p.relative_to(ROOT)) for p in CODE if "fromisoformat(" in p.read_text()]
    assert uses == [], uses

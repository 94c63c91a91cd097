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


def _imports(path: Path, *, lazy: bool = True) -> set[str]:
    """Every module ``path`` imports: at the top or inside a function (lazy imports count), or
    with ``lazy=False`` only those made when it is loaded (module-level statements)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


FILES = {_module(p): p for p in CODE}


def _graph(*, lazy: bool) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's own ``__init__`` left out)."""
    graph = {}
    for m, p in FILES.items():
        deps = _imports(p, lazy=lazy)
        graph[m] = {i for i in deps if i in FILES and i != m and not m.startswith(i + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


# The one group of modules that still reach each other, through imports inside functions only:
# the snapshot core (a manifest is checked by integrity, which follows an increment's chain, which
# reads and writes snapshots). Issue 13 reworks snapshot I/O; shrink this, never grow it.
KNOWN_LAZY_GROUP = [
    "longmem_etl.snapshots.crypto",
    "longmem_etl.snapshots.incremental",
    "longmem_etl.snapshots.integrity",
    "longmem_etl.snapshots.layout",
    "longmem_etl.snapshots.manifest",
    "longmem_etl.snapshots.writer",
]


def test_no_import_cycles_in_the_library_or_the_dagster_layer() -> None:
    """No cycle among the imports made at load time; counting lazy imports too, none but the
    snapshot core's (``api.sdk`` <-> ``api.endpoints``, ``pipelines.resources`` <->
    ``pipelines.seeding`` and the like cannot come back)."""
    assert _cycles(_graph(lazy=False)) == []
    lazy = _cycles(_graph(lazy=True))
    assert all(set(g) <= set(KNOWN_LAZY_GROUP) for g in lazy), lazy


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dumps_never_import_snapshots_or_above() -> None:
    """Dumps sit below snapshots: snapshot -> dump lives in ``snapshots.dump``. The one exception
    is reading an age-encrypted dump (``NAME.age``), whose decryption is ``snapshots.crypto``'s."""
    upper = ("longmem_etl.snapshots", "longmem_etl.migrate", "longmem_etl.transforms")
    edges = sorted(
        f"{m} -> {i}"
        for m, deps in _graph(lazy=True).items()
        if m.startswith("longmem_etl.dumps")
        for i in deps
        if i.startswith(upper)
    )
    assert edges == ["longmem_etl.dumps.read -> longmem_etl.snapshots.crypto"], edges


def test_no_module_imports_another_modules_private_names() -> None:
    """``from x import _name`` across modules: make the name public or keep it where it lives."""
    found = sorted(
        f"{p.relative_to(ROOT)}: {node.module}.{a.name}"
        for p in CODE
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith(("longmem_etl", "pipelines"))
        for a in node.names
        if a.name.startswith("_") and not a.name.startswith("__")
    )
    assert found == [], found


def test_sql_literals_are_quoted_in_one_place() -> None:
    """String literals and identifiers for SQL we build are quoted by ``sqlquote`` only."""
    doubling = re.compile(r"""replace\(\s*("'"|'"')\s*,""")
    found = sorted(
        str(p.relative_to(ROOT))
        for p in CODE
        if doubling.search(p.read_text()) and p.name != "sqlquote.py"
    )
    assert found == [], found


def test_the_default_key_variable_is_named_once() -> None:
    spelled = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in CODE
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if '"LONGMEM_API_KEY"' in line
    ]
    assert spelled == ["longmem_etl/api/keys.py:11"], spelled


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

"""The docs stay true and self-contained (issue 12).

- The generated reference pages (`docs/cli.md` from every verb's --help, `docs/steps.md` from real
  runs of every step, the asset graph in `docs/dagster.md`) equal what `scripts/gen_docs.py` makes
  now, so a new verb, flag or step fails here until the page is regenerated (as sqlite-utils' cog
  check does).
- Nothing points outside the repository, every relative link resolves, and the TOML examples in the
  docs are valid specs.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load_generator()


def _markdown() -> list[Path]:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / f for f in files if (ROOT / f).is_file()]


@pytest.mark.parametrize("page", sorted(gen.PAGES))
def test_generated_page_is_fresh(page: str) -> None:
    made = gen.PAGES[page]()
    assert (DOCS / page).read_text() == made, f"docs/{page} is stale: run {gen.REGENERATE}"


def test_every_verb_and_flag_is_in_the_cli_reference() -> None:
    page = (DOCS / "cli.md").read_text()
    missing = []
    for name, parser in gen.verb_parsers():
        section = page.split(f"## `longmem-etl {name}`\n", 1)
        if len(section) < 2:
            missing.append(name)
            continue
        body = section[1].split("\n## ", 1)[0]
        missing += [f"{name} {flag}" for flag in gen.option_strings(parser) if flag not in body]
    assert missing == [], f"undocumented: {missing}; run {gen.REGENERATE}"
    assert len(gen.verb_parsers()) >= 11


def test_every_step_kind_has_a_worked_example() -> None:
    from longmem_etl.transforms.spec import STEPS

    assert sorted(STEPS) == sorted(gen.STEP_EXAMPLES), "add the new kind to STEP_EXAMPLES"
    page = (DOCS / "steps.md").read_text()
    for kind in STEPS:
        assert f"## `{kind}`" in page


def test_every_worked_example_changes_something() -> None:
    """An example whose rows come out untouched shows nothing about its step."""
    for kind, example in gen.STEP_EXAMPLES.items():
        _, before, after, rejected = gen.run_example(kind, example)
        cols = example["columns"]
        shown = [{c: r[c] for c in cols} for r in before]
        assert rejected or [{c: r[c] for c in cols} for r in after] != shown, kind


def test_nothing_points_outside_the_repository() -> None:
    banned = ("../" + "shared", "DESIGN" + " §", "DESIGN" + ".md")
    files = [*_markdown(), *ROOT.glob("longmem_etl/**/*.py"), *ROOT.glob("pipelines/**/*.py")]
    files += [*ROOT.glob("tests/*.py"), *ROOT.glob("scripts/*.py"), ROOT / "pyproject.toml"]
    hits = [
        f"{p.relative_to(ROOT)}: {b}"
        for p in files
        for b in banned
        if b in p.read_text(encoding="utf-8", errors="replace")
    ]
    assert hits == []


def test_relative_links_resolve() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")
    broken = []
    for page in _markdown():
        for target, _ in link.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_docs_index_lists_every_page() -> None:
    index = (DOCS / "README.md").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert [p for p in pages if f"({p})" not in index] == []


def test_toml_examples_in_the_docs_are_valid_specs() -> None:
    from longmem_etl.transforms import parse_spec

    blocks = [
        (page.name, block)
        for page in DOCS.glob("*.md")
        for block in re.findall(r"```toml\n(.*?)```", page.read_text(), re.S)
    ]
    assert len(blocks) >= len(gen.STEP_EXAMPLES)
    for name, block in blocks:
        parse_spec(block, source=name)


def test_readme_lists_every_verb() -> None:
    readme = (ROOT / "README.md").read_text()
    top = {name.split()[0] for name, _ in gen.verb_parsers()}
    assert sorted(v for v in top if f"| `{v}" not in readme and f"/ `{v}" not in readme) == []


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"Run the tests:\n\n```bash\n(.*?)\n```", readme, re.S)
    assert command and command.group(1) in (ROOT / ".ci" / "run").read_text().splitlines()


def test_generator_check_mode_names_a_stale_page(tmp_path: Path, monkeypatch) -> None:
    for name in gen.PAGES:
        (tmp_path / name).write_text((DOCS / name).read_text())
    (tmp_path / "cli.md").write_text("# stale\n")
    monkeypatch.setattr(gen, "DOCS", tmp_path)
    assert gen.main(["--check"]) == 1
    assert (tmp_path / "cli.md").read_text() == "# stale\n"  # --check never writes
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0

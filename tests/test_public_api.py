"""`import longmem_etl` is a usable Python face: one function per verb, lazily loaded, and every
result speaks JSON (what `--json` prints) and text (what a terminal shows).

Modelled on httpx's exported-members test: ``__all__`` is exactly what the package exposes.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

import longmem_etl
from longmem_etl.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "longmem_etl" / "sample_data" / "acme-small.json"
SPEC = ROOT / "longmem_etl" / "sample_data" / "specs" / "migration-hygiene.toml"
VERBS = {
    "convert",
    "backup",
    "clean",
    "migrate",
    "verify",
    "diff",
    "connect",
    "restore",
    "forget",
    "publish",
}


def test_all_is_exactly_the_public_members() -> None:
    public = {
        name
        for name in dir(longmem_etl)
        if not name.startswith("_") and not isinstance(getattr(longmem_etl, name), types.ModuleType)
    }
    assert sorted(public) == sorted(n for n in longmem_etl.__all__ if not n.startswith("_"))
    assert longmem_etl.__all__ == sorted(longmem_etl.__all__[:-1]) + ["__version__"]
    assert set(longmem_etl.__all__) >= VERBS


@pytest.mark.parametrize("name", sorted(VERBS))
def test_each_verb_function_is_documented_and_typed(name: str) -> None:
    fn = getattr(longmem_etl, name)
    assert inspect.isfunction(fn) and fn.__module__ == "longmem_etl.public"
    assert fn.__doc__ and len(fn.__doc__.split()) >= 6
    sig = inspect.signature(fn)
    assert sig.return_annotation is not inspect.Signature.empty


def test_same_named_submodules_do_not_shadow_the_functions() -> None:
    for name in ("backup", "migrate"):
        module = importlib.import_module(f"longmem_etl.{name}")
        assert isinstance(module, types.ModuleType)
        assert inspect.isfunction(getattr(longmem_etl, name)), name
    with pytest.raises(AttributeError):
        longmem_etl.convert = print  # type: ignore[misc]


def test_import_as_of_a_module_under_the_migrate_package_works() -> None:
    """``import longmem_etl.migrate.engine as e`` (a fresh interpreter: nothing loaded yet) gives
    the module, while ``longmem_etl.migrate`` stays the public function."""
    code = (
        "import inspect, types\n"
        "import longmem_etl.migrate.engine as e\n"
        "import longmem_etl.migrate.inuse as i\n"
        "import longmem_etl\n"
        "assert isinstance(e, types.ModuleType) and e.__name__ == 'longmem_etl.migrate.engine'\n"
        "assert isinstance(i, types.ModuleType) and hasattr(e, 'run_migration')\n"
        "assert inspect.isfunction(longmem_etl.migrate)\n"
        "assert longmem_etl.migrate.__module__ == 'longmem_etl.public'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_import_stays_light() -> None:
    """`--help` must not pay for the data stack just because the package re-exports it."""
    code = (
        "import sys, longmem_etl; longmem_etl.__all__; "
        "print(sorted(m for m in ('duckdb', 'pyarrow', 'pandas', 'dagster') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    capsys.readouterr()
    code = main([*argv, "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_every_result_has_to_json_and_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each call's ``to_json()`` has the keys the verb's ``--json`` prints, and ``render()`` says
    what happened in words; both work on the real objects from a real run."""
    snaps = tmp_path / "snaps"
    converted = longmem_etl.convert(SAMPLE, snaps, tenant="acme")
    cleaned = longmem_etl.clean(converted.path, SPEC, snaps)
    changes = longmem_etl.diff(converted.path, cleaned.path)
    store = f"local:{tmp_path / 'acme.sqlite'}"
    copied = longmem_etl.migrate(str(converted.path), store, work_root=str(tmp_path / "work"))
    checked = longmem_etl.verify(str(converted.path), store)
    backed = longmem_etl.backup(store, tmp_path / "backups")
    again = longmem_etl.restore(store, snapshot=str(converted.path), dry_run=True)
    longmem_etl.backup(store, tmp_path / "backups")
    kept = longmem_etl.forget(tmp_path / "backups", keep_last=1, dry_run=True)

    for result, words in (
        (converted, "50 memories"),
        (cleaned, "snapshot"),
        (changes, "removed"),
        (copied, "EXACT"),
        (checked, "EXACT"),
        (backed, "50 memories"),
        (again, "already held 50"),
        (kept, "would remove 1"),
    ):
        data = result.to_json()
        json.dumps(data, default=str)  # what --json prints
        assert words in result.render(), (type(result).__name__, result.render())

    assert copied.exit_code == 0 and checked.exact
    assert cleaned.to_json()["rows_in"] == 50

    cli = _cli_json(capsys, "convert", str(SAMPLE), "--root", str(tmp_path / "cli"))
    assert cli.keys() == converted.to_json().keys()
    cli = _cli_json(capsys, "diff", str(converted.path), str(cleaned.path))
    assert cli == json.loads(json.dumps(changes.to_json(), default=str))

    con = longmem_etl.connect(snaps)
    try:
        (n,) = con.execute("SELECT count(*) FROM latest_memories").fetchone()
    finally:
        con.close()
    assert n == cleaned.to_json()["rows_out"]


def test_backup_takes_recipients_and_incremental_like_the_cli(tmp_path, monkeypatch) -> None:
    import pyrage

    from longmem_etl.snapshots.crypto import is_encrypted
    from longmem_etl.snapshots.manifest import read_manifest

    monkeypatch.delenv("LONGMEM_ETL_RECIPIENTS", raising=False)
    store = f"local:{tmp_path / 'acme.sqlite'}"
    longmem_etl.migrate(str(SAMPLE), store, work_root=str(tmp_path / "work"))
    root = tmp_path / "backups"
    first = longmem_etl.backup(store, root, incremental=False)
    second = longmem_etl.backup(store, root)  # incremental by default, as the CLI
    full = longmem_etl.backup(store, root, incremental=False)
    assert "incremental" not in read_manifest(first.path)
    assert read_manifest(second.path)["incremental"]["parent"] == Path(first.path).name
    assert "incremental" not in read_manifest(full.path)
    key = str(pyrage.x25519.Identity.generate().to_public())
    sealed = longmem_etl.backup(store, tmp_path / "sealed", recipients=[key])
    assert is_encrypted(read_manifest(sealed.path)) and not is_encrypted(read_manifest(first.path))

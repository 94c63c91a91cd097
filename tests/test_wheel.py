"""The wheel is the product: built from the repo and installed elsewhere, it runs on its own.

A user who runs `pip install longmem-etl` has no checkout: no top-level `sample_data/`, no tests,
no `pipelines/` beside their working directory. This builds the wheel from a copy of the package
sources (so nothing the build writes lands in the repo), installs it into a fresh virtualenv, and
runs `longmem-etl quickstart` and `dagster definitions validate -m pipelines` from an unrelated
directory.

To stay fast and offline, the fresh venv gets the third-party dependencies from this test's own
environment through a `.pth` line appended AFTER its own site-packages (the wheel's copy wins, and
`.pth` lines are plain paths, so the checkout's editable-install hook is not run). Installing the
wheel with its dependencies resolved from the index is `.ci/run`'s job.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "longmem_etl", "pipelines")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(
                path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation"),
            *("--no-index", "-q", "-w", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    (whl,) = out.glob("longmem_etl-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = _venv_python(venv)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install"),
            *("--no-deps", "--no-index", "-q", str(wheel)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "zz_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    return venv


def _run(venv: Path, cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LONGMEM_", "PYTHON"))}
    env |= {"DAGSTER_DISABLE_TELEMETRY": "1", "DAGSTER_HOME": str(cwd / "dagster_home")}
    env["LONGMEM_ETL_HOME"] = str(cwd / "state")  # quickstart's migration locks: not ~/.local/state
    (cwd / "dagster_home").mkdir(exist_ok=True)
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_wheel_ships_the_sample_data_and_the_pipelines(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "longmem_etl/sample_data/acme.json",
        "longmem_etl/sample_data/globex-dirty.json",
        "longmem_etl/sample_data/specs/migration-hygiene.toml",
        "longmem_etl/snapshots/diff.sql",
        "pipelines/definitions.py",
        "pipelines/collection_counts.sql",
    ):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "sample_data/", "benchmarks/")) for n in names)


def test_installed_wheel_runs_quickstart_from_anywhere(venv: Path, tmp_path: Path) -> None:
    python = _venv_python(venv)
    where = _run(venv, tmp_path, python, "-c", "import longmem_etl; print(longmem_etl.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv)  # the wheel's copy, not the checkout

    cli = python.parent / "longmem-etl"
    proc = _run(venv, tmp_path, cli, "quickstart", "--dir", tmp_path / "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["migration"]["verification"]["exact"] is True
    assert out["clean"]["rows_in"] == 1000


def test_installed_wheel_validates_the_dagster_definitions(venv: Path, tmp_path: Path) -> None:
    proc = _run(
        venv,
        tmp_path,
        _venv_python(venv),
        "-m",
        "dagster",
        "definitions",
        "validate",
        "-m",
        "pipelines",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pipelines" in proc.stdout + proc.stderr

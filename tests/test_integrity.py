"""Tampered snapshots are refused by every reader (exit 2 naming snapshot and file), and
``longmem-etl check`` finds damage (exit 3), staleness and debris; a healthy root exits 0."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import run_cli

from longmem_etl.snapshots.convert import convert_dump
from longmem_etl.snapshots.integrity import (
    CHECKSUM_KEY,
    check_snapshot,
    manifest_checksum,
    verify_at_open,
)

SAMPLES = Path(__file__).resolve().parent.parent / "longmem_etl" / "sample_data"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    convert_dump(SAMPLES / "acme-small.json", root, tenant="acme", progress=False)
    convert_dump(SAMPLES / "bad" / "bad-rows.json", root, tenant="other", progress=False)
    return root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "root"
    shutil.copytree(pristine, dst)
    return dst


def snap_of(root: Path, tenant: str = "acme") -> Path:
    return next((root / f"tenant={tenant}").glob("snapshot=*"))


def edit_manifest(snap: Path, change: Callable[[dict], None], *, reseal: bool = False) -> None:
    path = snap / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    if reseal:
        m[CHECKSUM_KEY] = manifest_checksum(m)
    path.write_text(json.dumps(m, indent=2))


def flip_byte(snap: Path, name: str = "memories.parquet") -> None:
    path = snap / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# --- the tampering variants: each changes the snapshot and says which file should be named ------


def _counts(m: dict) -> None:
    m["counts"]["memories"] += 1


def _has_collections(m: dict) -> None:
    m["has_collections"] = not m.get("has_collections", True)


def _tenant(m: dict) -> None:
    m["dump_header"]["tenant"] = "someone-else"


def _passwd(m: dict) -> None:
    m["files"]["/etc/passwd"] = {"sha256": "0" * 64, "bytes": 10}


def _dotdot(m: dict) -> None:
    m["files"]["../x.parquet"] = {"sha256": "0" * 64, "bytes": 10}


def _other_parquet(snap: Path, root: Path) -> None:
    """Another snapshot's Parquet copied in, with the manifest's size and sha256 updated to it."""
    other = snap_of(root, "other") / "memories.parquet"
    shutil.copy(other, snap / "memories.parquet")
    size = other.stat().st_size
    from longmem_etl.snapshots.manifest import file_digest

    def change(m: dict) -> None:
        m["files"]["memories.parquet"] = {"sha256": file_digest(other)[0], "bytes": size}

    edit_manifest(snap, change, reseal=True)


TAMPERING: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "flipped byte": (lambda s, r: flip_byte(s), "memories.parquet"),
    "missing file": (lambda s, r: (s / "collections.parquet").unlink(), "collections.parquet"),
    "truncated parquet": (
        lambda s, r: os.truncate(s / "memories.parquet", 100),
        "memories.parquet",
    ),
    "edited counts": (lambda s, r: edit_manifest(s, _counts), "manifest.json"),
    "edited has_collections": (lambda s, r: edit_manifest(s, _has_collections), "manifest.json"),
    "edited dump_header tenant": (lambda s, r: edit_manifest(s, _tenant), "manifest.json"),
    "files names /etc/passwd": (
        lambda s, r: edit_manifest(s, _passwd, reseal=True),
        "/etc/passwd",
    ),
    "files names ../x": (lambda s, r: edit_manifest(s, _dotdot, reseal=True), "../x.parquet"),
    "another snapshot's parquet": (_other_parquet, "memories.parquet"),
    "counts edited and resealed": (
        lambda s, r: edit_manifest(s, _counts, reseal=True),
        "memories.parquet",
    ),
}
# a flipped byte inside Parquet data pages keeps the size and the footer: only sha256 finds it
NEEDS_BYTES = {"flipped byte"}


def test_new_manifests_are_sealed_and_intact(pristine: Path) -> None:
    snap = snap_of(pristine)
    manifest = verify_at_open(snap, checksums=True)
    assert manifest[CHECKSUM_KEY] == manifest_checksum(manifest)
    assert check_snapshot(snap, read_data=1.0) == []


def test_old_manifest_without_checksum_still_opens(root: Path) -> None:
    snap = snap_of(root)
    edit_manifest(snap, lambda m: m.pop(CHECKSUM_KEY))
    assert verify_at_open(snap, checksums=True)["tenant"] == "acme"
    r = run_cli("check", "--root", str(root))
    assert r.returncode == 0, r.stderr
    assert "without its own checksum" in r.stdout


@pytest.mark.parametrize("variant", sorted(TAMPERING))
def test_tampered_snapshot_is_named_by_check_and_refused_by_readers(
    root: Path, variant: str, tmp_path: Path
) -> None:
    tamper, named = TAMPERING[variant]
    snap = snap_of(root)
    tamper(snap, root)
    flags = ["--read-data"] if variant in NEEDS_BYTES else []
    r = run_cli("check", "--root", str(root), *flags)
    assert r.returncode == 3, (r.stdout, r.stderr)
    damaged = [line for line in r.stdout.splitlines() if line.startswith("DAMAGED")]
    assert damaged and all(str(snap) in line for line in damaged), r.stdout
    assert named in damaged[0], r.stdout  # the first problem names the file (readers say it too)
    # every reader refuses it: exit 2, one line naming the snapshot (sql needs no --read-data:
    # it checks sizes and row counts; dump and diff hash the files they read)
    readers = [
        ("dump", str(snap), "--out", str(tmp_path / "out.json")),
        ("diff", str(snap_of(root, "other")), str(snap)),
    ]
    if variant not in NEEDS_BYTES:
        readers.append(("sql", "SELECT count(*) FROM memories", "--root", str(root)))
    for args in readers:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(snap) in lines[0] and named in lines[0], (args, r.stderr)
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.json").exists()


def test_sql_trust_skips_the_check_but_never_reads_outside(root: Path) -> None:
    snap = snap_of(root)
    edit_manifest(snap, _counts)
    r = run_cli("sql", "SELECT count(*) AS n FROM memories", "--root", str(root), "--trust")
    assert r.returncode == 0, r.stderr
    edit_manifest(snap, _passwd)
    r = run_cli("sql", "SELECT count(*) AS n FROM memories", "--root", str(root), "--trust")
    assert r.returncode == 2 and "/etc/passwd" in r.stderr


def test_sql_truncated_parquet_with_trust_is_one_line(root: Path) -> None:
    os.truncate(snap_of(root) / "memories.parquet", 100)
    r = run_cli("sql", "SELECT count(*) FROM memories", "--root", str(root), "--trust")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_healthy_root_exits_0_and_json_says_so(root: Path) -> None:
    r = run_cli("check", "--root", str(root), "--read-data", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["healthy"] and len(report["snapshots"]) == 2
    assert all(s["ok"] and s["sealed"] for s in report["snapshots"])


def test_debris_is_listed_but_not_damage(root: Path) -> None:
    (root / ".tmp-abandoned").mkdir()
    snap = snap_of(root)
    (snap / "upload.part").write_bytes(b"x")
    (snap.parent / "snapshot=20990101T000000Z").mkdir()
    r = run_cli("check", "--root", str(root), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    kinds = {(Path(d["path"]).name, d["kind"]) for d in report["debris"]}
    assert (".tmp-abandoned", "temp") in kinds
    assert ("snapshot=20990101T000000Z", "incomplete snapshot") in kinds
    assert any(s["unlisted_files"] == ["upload.part"] for s in report["snapshots"])


def test_max_age_flags_stale_tenant(root: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from longmem_etl.snapshots.check import check_root

    # snapshots are named after the dump's export time, so measure age from the newest one
    newest = max(t.newest_verified_at for t in check_root(root).tenants)
    later = newest + timedelta(days=3)
    report = check_root(root, max_age=timedelta(days=2), now=later)
    assert report.exit_code == 3 and {t.tenant for t in report.tenants if t.stale} == {
        "acme",
        "other",
    }
    assert check_root(root, max_age=timedelta(days=4), now=later).exit_code == 0
    fresh_enough = f"{(datetime.now(timezone.utc) - newest).days + 2}d"
    r = run_cli("check", "--root", str(root), "--tenant", "acme", "--max-age", fresh_enough)
    assert r.returncode == 0, r.stderr
    # a tenant whose only snapshot is damaged has no intact snapshot: stale
    os.truncate(snap_of(root) / "memories.parquet", 10)
    r = run_cli("check", "--root", str(root), "--tenant", "acme", "--max-age", fresh_enough)
    assert r.returncode == 3 and "STALE tenant acme: no intact snapshot" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--max-age", "soon"],
        ["--read-data-subset", "150%"],
        ["--read-data", "--read-data-subset", "5%"],
        ["--tenant", "nobody"],
    ],
)
def test_bad_usage_is_exit_2(root: Path, args: list[str]) -> None:
    r = run_cli("check", "--root", str(root), *args)
    assert r.returncode == 2, r.stderr
    assert "internal error" not in r.stderr


def test_root_that_is_a_file_is_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    for args in (["check", "--root", str(f)], ["sql", "SELECT 1", "--root", str(f)]):
        r = run_cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr

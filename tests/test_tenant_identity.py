"""Tenant names are identities, and no verb deletes what it did not make.

Real ``longmem-etl`` processes: six tenants whose names the old layout merged (東京/서울 -> default,
a/b -> a_b, Acme/acme on a case-folding filesystem) each backed up twice with ``--keep 1``,
concurrently; old-layout snapshots still read and pruned by their exact name; a user's
``.tmp-build-cache`` survives every sweep; the same dump converted twice is one snapshot.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longmem_etl import jsonio
from longmem_etl.backup import prune
from longmem_etl.cli.main import main
from longmem_etl.dumps.normalize import normalize_memories
from longmem_etl.errors import BadInput
from longmem_etl.snapshots import SnapshotWriter, list_snapshots, snapshot_tenant
from longmem_etl.snapshots.layout import (
    MAX_ENCODED,
    decode_tenant,
    encode_tenant,
    legacy_tenant_dir,
    tenant_dir,
)
from longmem_etl.snapshots.manifest import read_manifest, write_manifest
from longmem_etl.snapshots.temps import MARKER, clean_stale_temps

CLI = str(Path(sys.executable).with_name("longmem-etl"))
NAMES = ["東京", "서울", "a/b", "a_b", "Acme", "acme"]


def _dump(tenant: str, *, n: int = 4, exported_at: str | None = "2025-01-04T00:00:00Z", tag=""):
    dump: dict = {"format_version": 1, "tenant": tenant}
    if exported_at is not None:
        dump["exported_at"] = exported_at
    dump["collections"] = ["notes"]
    dump["memories"] = [
        {"id": f"{tenant}|{i}{tag}", "collection": "notes", "text": f"{tenant} memory {i}{tag}"}
        for i in range(n)
    ]
    return dump


def _write(path: Path, dump: dict) -> Path:
    path.write_text(json.dumps(dump, ensure_ascii=False), encoding="utf-8")
    return path


def _cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    p = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == expect, (args, p.returncode, p.stderr)
    return p


def _sql(root: Path, query: str) -> list[dict]:
    out = _cli("sql", query, "--root", str(root), "--format", "json").stdout
    return json.loads(out)


def _seed_stores(tmp_path: Path) -> list[str]:
    uris = []
    for i, name in enumerate(NAMES):
        uri = f"local:{tmp_path / f'store{i}.db'}"
        assert (
            main(
                ["local", "seed", uri, "--from", str(_write(tmp_path / f"d{i}.json", _dump(name)))]
            )
            == 0
        )
        uris.append(uri)
    return uris


def test_six_tenants_backed_up_twice_keep_one_each_with_exact_names(tmp_path):
    uris = _seed_stores(tmp_path)
    root = tmp_path / "snaps"
    for _round in range(2):  # all six at once on one root: sweeps and prunes run side by side
        procs = [
            subprocess.Popen(
                [CLI, "backup", "--source", uri, "--root", str(root), "--keep", "1", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for uri in uris
        ]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
        assert [r["tenant"] for r in results] == NAMES

    snaps = list_snapshots(root)
    assert len(snaps) == 6
    assert sorted(snapshot_tenant(s) for s in snaps) == sorted(NAMES)
    folders = {s.parent.name for s in snaps}
    assert len({f.lower() for f in folders}) == 6  # distinct even on a case-insensitive FS
    assert all(f.isascii() for f in folders)
    for name in NAMES:
        (mine,) = list_snapshots(root, name)
        assert read_manifest(mine)["tenant"] == name
        assert mine.parent == tenant_dir(root, name)

    rows = _sql(
        root,
        "SELECT tenant, count(*) AS n, count(*) FILTER (WHERE NOT starts_with(id, tenant || '|')) "
        "AS foreign_rows FROM latest_memories GROUP BY tenant ORDER BY tenant",
    )
    assert sorted(r["tenant"] for r in rows) == sorted(NAMES)
    assert all(r["n"] == 4 and r["foreign_rows"] == 0 for r in rows)
    snap_rows = _sql(root, "SELECT tenant, manifest->>'$.tenant' AS m FROM snapshots")
    assert sorted(r["tenant"] for r in snap_rows) == sorted(NAMES)
    assert all(r["tenant"] == r["m"] for r in snap_rows)


def _legacy(root: Path, tenant_in_manifest: str, folder_value: str) -> Path:
    """A snapshot as an older version left it: folder ``tenant=<sanitised>``, that name inside."""
    dump = _dump(tenant_in_manifest, n=3, tag="-old")
    with SnapshotWriter(root, tenant_in_manifest, source={"kind": "test"}) as w:
        good, _ = normalize_memories(dump["memories"])
        w.write_memories(good)
    old_dir = root / f"tenant={folder_value}"
    old_dir.mkdir(parents=True, exist_ok=True)
    target = old_dir / w.path.name
    os.rename(w.path, target)
    if not any(w.path.parent.iterdir()):
        w.path.parent.rmdir()
    return target


def test_old_layout_snapshots_still_read_and_retention_uses_exact_names(tmp_path):
    root = tmp_path / "snaps"
    old_acme = _legacy(root, "Acme", "Acme")  # the old folder kept case; new one is %41cme
    old_default = _legacy(root, "default", "default")  # what 東京 used to become
    assert old_acme.parent == legacy_tenant_dir(root, "Acme") != tenant_dir(root, "Acme")
    assert list_snapshots(root, "Acme") == [old_acme]
    assert list_snapshots(root, "acme") == []  # the manifest decides, not the folder's spelling
    assert list_snapshots(root, "東京") == []
    assert snapshot_tenant(old_default) == "default"
    rows = _sql(root, "SELECT DISTINCT tenant FROM memories ORDER BY tenant")
    assert [r["tenant"] for r in rows] == ["Acme", "default"]

    uri = f"local:{tmp_path / 'acme.db'}"
    assert (
        main(["local", "seed", uri, "--from", str(_write(tmp_path / "a.json", _dump("Acme")))]) == 0
    )
    out = json.loads(
        _cli("backup", "--source", uri, "--root", str(root), "--keep", "1", "--json").stdout
    )
    assert out["tenant"] == "Acme" and out["pruned"] == [str(old_acme)]
    assert not old_acme.exists() and old_default.is_dir()  # another tenant's only snapshot stays
    assert sorted(snapshot_tenant(s) for s in list_snapshots(root)) == ["Acme", "default"]


def test_sweep_removes_only_marked_dead_temps(tmp_path):
    root = tmp_path / "snaps"
    root.mkdir()
    cache = root / ".tmp-build-cache"
    (cache / "sub").mkdir(parents=True)
    (cache / "sub" / "object.o").write_bytes(b"user data")
    foreign = root / ".tmp-foreign"
    foreign.mkdir()
    (foreign / ".owner").write_text("someone else's lock\n")
    dead = root / ".tmp-deadwriter"  # what a killed writer leaves: our marker, lock released
    dead.mkdir()
    (dead / ".owner").write_text(f"{MARKER} pid=1 host=x started=2025-01-01T00:00:00Z\n")
    (dead / "memories.parquet").write_bytes(b"partial")
    month_ago = time.time() - 30 * 24 * 3600
    for p in (cache, foreign, dead):
        os.utime(p, (month_ago, month_ago))

    dump = _write(tmp_path / "d.json", _dump("acme"))
    out = json.loads(_cli("convert", str(dump), "--root", str(root), "--json").stdout)
    assert Path(out["path"]).is_dir()
    uri = f"local:{tmp_path / 's.db'}"
    assert main(["local", "seed", uri, "--from", str(dump)]) == 0
    out = json.loads(
        _cli("backup", "--source", uri, "--root", str(root), "--keep", "1", "--json").stdout
    )
    assert out["cleaned_temps"] == []  # convert's writer already swept the dead one
    assert not dead.exists()
    assert (cache / "sub" / "object.o").read_bytes() == b"user data"
    assert (foreign / ".owner").read_text() == "someone else's lock\n"
    assert clean_stale_temps(root) == []
    assert sorted(p.name for p in root.glob(".tmp-*")) == [".tmp-build-cache", ".tmp-foreign"]


def test_something_unmarked_in_the_way_exits_2_naming_it(tmp_path):
    root = tmp_path / "snaps"
    root.mkdir()
    (root / "tenant=acme").write_text("a user's file")
    dump = _write(tmp_path / "d.json", _dump("acme"))
    p = _cli("convert", str(dump), "--root", str(root), expect=2)
    assert "tenant=acme" in p.stderr and p.stderr.count("\n") == 1
    assert (root / "tenant=acme").read_text() == "a user's file"
    assert sorted(os.listdir(root)) == ["tenant=acme"]


def test_prune_never_removes_a_snapshot_this_tool_did_not_write(tmp_path):
    root = tmp_path / "snaps"
    made = []
    for _ in range(3):
        with SnapshotWriter(root, "acme", source={"kind": "test"}) as w:
            pass
        made.append(w.path)
    foreign = made[0]
    manifest = read_manifest(foreign)
    manifest["tool"] = {"name": "someone-else"}
    write_manifest(foreign, manifest)
    removed = prune(root, "acme", 1)
    assert removed == [str(made[1])]
    assert foreign.is_dir() and made[2].is_dir()
    assert not list(root.glob(".tmp-*"))


def test_same_dump_twice_is_one_snapshot_named_after_export_time(tmp_path):
    root = tmp_path / "snaps"
    first = _write(tmp_path / "first.json", _dump("東京", exported_at="2025-03-01T10:20:30.5Z"))
    out1 = json.loads(_cli("convert", str(first), "--root", str(root), "--json").stdout)
    assert Path(out1["path"]).name == "snapshot=20250301T102030Z"
    assert out1["already_present"] is False
    out2 = json.loads(_cli("convert", str(first), "--root", str(root), "--json").stdout)
    assert out2["already_present"] is True and out2["path"] == out1["path"]
    assert out2["memories"] == 4 and out2["tenant"] == "東京"
    human = _cli("convert", str(first), "--root", str(root)).stdout
    assert human.startswith("already present:")
    assert len(list_snapshots(root, "東京")) == 1

    # another dump, same tenant, same exported_at: its own snapshot, the next second
    other = _write(
        tmp_path / "other.json", _dump("東京", exported_at="2025-03-01T10:20:30.5Z", tag="x")
    )
    out3 = json.loads(_cli("convert", str(other), "--root", str(root), "--json").stdout)
    assert out3["already_present"] is False
    assert Path(out3["path"]).name == "snapshot=20250301T102031Z"
    assert (
        read_manifest(out1["path"])["source"]["sha256"]
        != read_manifest(out3["path"])["source"]["sha256"]
    )
    # the first is still recognised (the search is by content, not by name)
    again = json.loads(_cli("convert", str(first), "--root", str(root), "--json").stdout)
    assert again["already_present"] is True and again["path"] == out1["path"]
    # same bytes under another tenant name: a snapshot of that tenant
    out4 = json.loads(
        _cli("convert", str(first), "--root", str(root), "--tenant", "서울", "--json").stdout
    )
    assert out4["already_present"] is False and out4["tenant"] == "서울"
    assert len(list_snapshots(root)) == 3


@pytest.mark.parametrize("exported_at", [None, "not a time", "2999-01-01T00:00:00Z"])
def test_without_a_usable_exported_at_the_snapshot_is_named_now(tmp_path, exported_at):
    root = tmp_path / "snaps"
    dump = _write(tmp_path / "d.json", _dump("acme", exported_at=exported_at))
    before = time.time()
    out = json.loads(_cli("convert", str(dump), "--root", str(root), "--json").stdout)
    name = Path(out["path"]).name.removeprefix("snapshot=")
    when = time.mktime(time.strptime(name, "%Y%m%dT%H%M%SZ")) - time.timezone
    assert before - 2 <= when <= time.time() + 2


def test_encoding_is_reversible_bounded_and_case_safe():
    rng = random.Random(7)
    alphabet = "aAbB/_.%=~ \t\n東京서울éé..-@+:" + "Z"
    names = set(NAMES) | {"..", ".", " ", "x" * 300, "東" * 200, "a~b", "%41cme", "A.", "a."}
    for _ in range(3000):
        names.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))
    folded: dict[str, str] = {}
    for name in names:
        enc = encode_tenant(name)
        assert enc.isascii() and "/" not in enc and "\\" not in enc and not enc.endswith((".", " "))
        assert len(enc) <= MAX_ENCODED
        dec = decode_tenant(enc)
        assert dec == name or (dec is None and len(enc) > MAX_ENCODED - 20)  # hashed: long names
        assert folded.setdefault(enc.lower(), name) == name, (name, folded[enc.lower()])
    for bad in ("", None, 5, "\udc80abc"):
        with pytest.raises(BadInput):
            encode_tenant(bad)  # type: ignore[arg-type]


def test_partition_keys_are_exact_names_or_reversible_escapes():
    from dagster import DagsterInstance

    from pipelines.partitions import partition_key, tenant_of
    from pipelines.resources import env_name, render

    names = [*NAMES, "a...b", "line\nbreak", "50%", "%41", "tab\there", "acme.eu", "a-b", "a__b"]
    keys = [partition_key(n) for n in names]
    assert keys[: len(NAMES)] == NAMES and partition_key("acme.eu") == "acme.eu"
    assert len(set(keys)) == len(names)
    assert [tenant_of(k) for k in keys] == names
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("tenants", keys)  # Dagster accepts every one
        stored = instance.get_dynamic_partitions("tenants")
    assert sorted(tenant_of(k) for k in stored) == sorted(names)
    assert len({env_name(n) for n in names}) == len(names)
    assert env_name("initech") == "INITECH"
    paths = {render("{home}/tenants/{tenant}.sqlite", n) for n in names}
    assert len({p.lower() for p in paths}) == len(names)
    assert all(Path(p).name.count("/") == 0 for p in paths)


def test_manifest_records_exact_name_and_source_sha(tmp_path):
    root = tmp_path / "snaps"
    dump = _write(tmp_path / "weird.json", _dump("  spaced / Ünï  "))
    out = json.loads(_cli("convert", str(dump), "--root", str(root), "--json").stdout)
    manifest = jsonio.loads(Path(out["path"], "manifest.json").read_bytes())
    assert manifest["tenant"] == "  spaced / Ünï  "
    assert manifest["source"]["sha256"] and manifest["source"]["bytes"] == dump.stat().st_size
    assert Path(out["path"]).parent.name == "tenant=" + encode_tenant("  spaced / Ünï  ")


def test_dump_never_replaces_an_existing_file_unless_forced(tmp_path):
    root = tmp_path / "snaps"
    dump = _write(tmp_path / "d.json", _dump("Acme"))
    snap = json.loads(_cli("convert", str(dump), "--root", str(root), "--json").stdout)["path"]
    out = tmp_path / "mine.json"
    out.write_text("the user's own file")
    p = _cli("dump", snap, "--out", str(out), expect=2)
    assert str(out) in p.stderr and "--force" in p.stderr and p.stderr.count("\n") == 1
    assert out.read_text() == "the user's own file"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d.json", "mine.json", "snaps"]
    _cli("dump", snap, "--out", str(out), "--force")
    assert jsonio.loads(out.read_bytes())["tenant"] == "Acme"


def test_a_later_backup_always_sorts_after_the_newest_snapshot(tmp_path):
    """Backup 2 took the next second (same-second commit); backup 1 was then pruned; backup 3,
    exported in backup 1's second, must still be named after backup 2, or retention and
    latest_memories would take backup 2 for the newest."""
    from datetime import datetime, timezone

    root = tmp_path / "snaps"
    t = datetime(2026, 1, 1, 12, 0, 0, 300_000, tzinfo=timezone.utc)
    paths = []
    for _ in range(2):
        with SnapshotWriter(root, "acme", source={"kind": "t"}, named_at=t) as w:
            pass
        paths.append(w.path)
    assert [p.name for p in paths] == ["snapshot=20260101T120000Z", "snapshot=20260101T120001Z"]
    assert prune(root, "acme", 1, protect=paths[1]) == [str(paths[0])]
    with SnapshotWriter(root, "acme", source={"kind": "t"}, named_at=t) as w:
        pass
    assert w.path.name == "snapshot=20260101T120002Z"
    # a dump's exported_at is history, not the present: it keeps its own (older) second
    with SnapshotWriter(root, "acme", source={"kind": "t"}, named_at=t, in_order=False) as w:
        pass
    assert w.path.name == "snapshot=20260101T120000Z"

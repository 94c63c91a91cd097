"""forget: restic's --keep-* rules checked against an independent implementation written here,
plus the on-disk guarantees (dry run, verified snapshot kept, manifest-first removal, only our files,
an interrupted removal finished by the next run) through the real CLI."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longmem_etl.cli.main import main
from longmem_etl.retention import (
    FORGET_MARKER,
    Policy,
    Within,
    apply_policy,
)
from longmem_etl.snapshots import list_snapshots
from longmem_etl.snapshots.layout import snapshot_name, tenant_dir
from longmem_etl.snapshots.manifest import read_manifest, write_manifest

SAMPLES = Path(__file__).resolve().parent.parent / "longmem_etl" / "sample_data"

# -- an independent implementation of restic's rules ------------------------------------------------
# Written from restic's documentation, not from retention.py: per rule, group by period key (strftime),
# keep the newest snapshot of the N newest periods; while a rule has counts left once the newer
# snapshots are accounted for, the oldest snapshot is kept as well; --keep-within keeps what is newer
# than newest - duration with Go's AddDate normalisation (day overflow rolls into the next month).

PERIOD_FORMATS = {
    "hourly": "%Y-%m-%d %H",
    "daily": "%Y-%m-%d",
    "weekly": "%G-W%V",
    "monthly": "%Y-%m",
    "yearly": "%Y",
}


def go_add_date(t: datetime, years: int, months: int, days: int) -> datetime:
    total_months = t.year * 12 + (t.month - 1) + years * 12 + months
    y, m = divmod(total_months, 12)
    base = datetime(y, m + 1, 1, t.hour, t.minute, t.second, tzinfo=timezone.utc)
    return base + timedelta(days=(t.day - 1) + days)


def reference_keep(times: list[datetime], policy: dict) -> set[datetime]:
    newest_first = sorted(times, reverse=True)
    if not newest_first:
        return set()
    keep: set[datetime] = set()
    last = policy.get("last", 0)
    if last:
        keep |= set(newest_first if last == -1 else newest_first[:last])
    for rule, fmt in PERIOD_FORMATS.items():
        n = policy.get(rule, 0)
        if not n:
            continue
        newest_of: dict[str, datetime] = {}
        for t in newest_first:
            newest_of.setdefault(t.strftime(fmt), t)
        periods = sorted(newest_of, key=lambda k: newest_of[k], reverse=True)
        chosen = periods if n == -1 else periods[:n]
        keep |= {newest_of[p] for p in chosen}
        periods_before_oldest = {t.strftime(fmt) for t in newest_first[:-1]}
        if n == -1 or len(periods_before_oldest) < n:
            keep.add(newest_first[-1])
    within = policy.get("within")
    if within is not None:
        y, mo, d, h = within
        cutoff = go_add_date(newest_first[0], -y, -mo, -d) - timedelta(hours=h)
        keep |= {t for t in times if t > cutoff}
    return keep


def lib_keep(times: list[datetime], policy: dict) -> set[datetime]:
    within = policy.get("within")
    p = Policy(
        **{k: v for k, v in policy.items() if k != "within"},
        within=Within(*within) if within else None,
    )
    return {times[i] for i in apply_policy(times, p)}


# -- the month of snapshots -------------------------------------------------------------------------

MONTH = [  # 15 snapshots over November 2026 (UTC); some days have two
    "2026-11-01T03:00",
    "2026-11-02T03:00",
    "2026-11-04T03:00",
    "2026-11-04T21:30",
    "2026-11-08T23:59",  # Sunday: last of ISO week 45
    "2026-11-09T00:01",  # Monday: ISO week 46
    "2026-11-12T10:00",
    "2026-11-15T12:00",
    "2026-11-16T08:00",
    "2026-11-20T08:00",
    "2026-11-22T08:00",
    "2026-11-25T08:00",
    "2026-11-29T01:00",
    "2026-11-29T23:00",
    "2026-11-30T06:00",
]


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)


def test_a_month_keeps_restics_set_for_daily3_weekly2_last1():
    times = [_t(s) for s in MONTH]
    policy = {"daily": 3, "weekly": 2, "last": 1}
    expected = {
        _t("2026-11-30T06:00"),  # last, daily (30th), weekly (ISO week 49)
        _t("2026-11-29T23:00"),  # daily (29th), weekly (ISO week 48)
        _t("2026-11-25T08:00"),  # daily (25th)
    }
    assert reference_keep(times, policy) == expected
    assert lib_keep(times, policy) == expected


def test_restics_forum_example_and_oldest_kept_while_counts_left():
    # restic forum: a1 May 1 08:00, a2/a3 May 2 08:00/11:00, a4 May 4, a5 May 5 -> --keep-daily 4
    # keeps a1 a3 a4 a5
    ts = [_t(s) for s in ("2026-05-01T08:00", "2026-05-02T08:00", "2026-05-02T11:00")]
    ts += [_t("2026-05-04T09:00"), _t("2026-05-05T10:00")]
    assert lib_keep(ts, {"daily": 4}) == {ts[0], ts[2], ts[3], ts[4]}
    # two days, --keep-daily 5: the newest of each day, plus the oldest (counts left)
    two = [_t("2026-05-01T08:00"), _t("2026-05-01T09:00"), _t("2026-05-02T08:00")]
    assert lib_keep(two, {"daily": 5}) == set(two)
    assert reference_keep(two, {"daily": 5}) == set(two)


def test_keep_within_uses_go_month_arithmetic():
    # newest Mar 31: minus 1 month is "Feb 31" = Mar 3 (Go), not Feb 28 (clamping)
    newest = _t("2027-03-31T12:00")
    ts = [newest, _t("2027-03-02T12:00"), _t("2027-03-03T12:00"), _t("2027-03-03T12:01")]
    assert lib_keep(ts, {"within": (0, 1, 0, 0)}) == {newest, ts[3]}


stamp = st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2027, 12, 31)).map(
    lambda d: d.replace(microsecond=0, tzinfo=timezone.utc)
)
count = st.sampled_from([0, 0, 1, 2, 3, 5, 8, -1])


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(stamp, min_size=1, max_size=40, unique=True),
    last=count,
    hourly=count,
    daily=count,
    weekly=count,
    monthly=count,
    yearly=count,
    within=st.none() | st.tuples(*(st.integers(0, n) for n in (1, 14, 40, 72))),
)
def test_property_library_equals_independent_rules(
    times, last, hourly, daily, weekly, monthly, yearly, within
):
    policy = {
        "last": last,
        "hourly": hourly,
        "daily": daily,
        "weekly": weekly,
        "monthly": monthly,
        "yearly": yearly,
    }
    if within is not None and any(within):
        policy["within"] = within
    if not any(policy.values()):
        policy["last"] = 1
    assert lib_keep(times, policy) == reference_keep(times, policy)


@settings(max_examples=100, deadline=None)
@given(times=st.lists(stamp, min_size=1, max_size=30, unique=True), n=st.integers(1, 10))
def test_property_keep_last_is_the_n_newest(times, n):
    assert lib_keep(times, {"last": n}) == set(sorted(times)[-n:])


# -- on disk, through the CLI -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_snapshot(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("src")
    root = tmp / "snaps"
    assert main(["convert", str(SAMPLES / "acme-small.json"), "--root", str(root)]) == 0
    (snap,) = list_snapshots(root)
    return snap


def _place(template: Path, root: Path, tenant: str, name: str) -> Path:
    """A copy of ``template`` as tenant ``tenant``'s snapshot ``name`` (the manifest says whose a
    snapshot is, so it is rewritten to match)."""
    dest = tenant_dir(root, tenant) / name
    shutil.copytree(template, dest)
    manifest = read_manifest(dest)
    manifest.update(tenant=tenant, snapshot=name)
    write_manifest(dest, manifest)
    return dest


def _month_root(tmp_path: Path, template: Path, tenant: str = "acme") -> Path:
    root = tmp_path / "root"
    for s in MONTH:
        _place(template, root, tenant, snapshot_name(_t(s)))
    return root


def _names(root: Path, tenant: str = "acme") -> set[str]:
    return {p.name for p in list_snapshots(root, tenant)}


def test_cli_forget_dry_run_then_real(tmp_path, one_snapshot, capsys):
    root = _month_root(tmp_path, one_snapshot)
    before = sorted(p.name for p in (root / "tenant=acme").iterdir())
    args = ["forget", "--root", str(root), "--keep-daily", "3", "--keep-weekly", "2"]
    args += ["--keep-last", "1", "--json"]
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in (root / "tenant=acme").iterdir()) == before  # nothing touched
    (plan,) = dry["tenants"]
    kept = {Path(k["snapshot"]).name for k in plan["keep"]}
    policy = {"daily": 3, "weekly": 2, "last": 1}
    want = {snapshot_name(t) for t in reference_keep([_t(s) for s in MONTH], policy)}
    assert kept == want and len(plan["remove"]) == 12
    reasons = {Path(k["snapshot"]).name: k["reasons"] for k in plan["keep"]}
    assert "last snapshot" in reasons[snapshot_name(_t("2026-11-30T06:00"))]
    assert main(args) == 0
    real = json.loads(capsys.readouterr().out)
    assert len(real["removed"]) == 12
    assert _names(root) == kept
    assert sorted(p.name for p in (root / "tenant=acme").iterdir()) == sorted(kept)


def test_the_newest_verified_snapshot_is_never_removed(tmp_path, one_snapshot, capsys):
    root = _month_root(tmp_path, one_snapshot)
    newest = root / "tenant=acme" / snapshot_name(_t(MONTH[-1]))
    second = root / "tenant=acme" / snapshot_name(_t(MONTH[-2]))
    for snap in (newest, second):  # damage the two newest: flip one byte
        f = snap / "memories.parquet"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["forget", "--root", str(root), "--keep-last", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    third = snapshot_name(_t(MONTH[-3]))
    assert _names(root) == {newest.name, second.name, third}
    (plan,) = out["tenants"]
    assert Path(plan["verified_kept"]).name == third
    reasons = {Path(k["snapshot"]).name: k["reasons"] for k in plan["keep"]}
    assert reasons[third] == ["only verified snapshot"]


def test_removal_deletes_only_listed_files_and_is_finished_after_a_kill(
    tmp_path, one_snapshot, capsys
):
    root = _month_root(tmp_path, one_snapshot)
    tdir = root / "tenant=acme"
    oldest, second = tdir / snapshot_name(_t(MONTH[0])), tdir / snapshot_name(_t(MONTH[1]))
    (oldest / "notes.txt").write_text("a user's file")  # not ours: must survive
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    manifest = json.loads((second / "manifest.json").read_text())
    manifest["files"]["../../../precious.txt"] = {"sha256": "0" * 64, "bytes": 7}
    (second / "manifest.json").write_text(json.dumps(manifest))
    # a forget killed right after taking the manifest away from a third snapshot
    third = tdir / snapshot_name(_t(MONTH[2]))
    (third / "manifest.json").rename(third / FORGET_MARKER)
    assert third.name not in _names(root)  # readers stopped seeing it at once
    assert main(["forget", "--root", str(root), "--keep-last", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["finished_interrupted"] == [str(third)]
    assert not third.exists()
    assert outside.read_text() == "keep me"
    assert not second.exists()
    assert sorted(p.name for p in oldest.iterdir()) == ["notes.txt"]
    assert len(_names(root)) == 3
    assert [Path(n["path"]).name for n in out["not_removed"]] == [oldest.name]


def test_a_snapshot_with_an_unreadable_manifest_is_not_touched(tmp_path, one_snapshot, capsys):
    root = _month_root(tmp_path, one_snapshot)
    oldest = root / "tenant=acme" / snapshot_name(_t(MONTH[0]))
    (oldest / "manifest.json").write_text("{not json")
    capsys.readouterr()
    assert main(["forget", "--root", str(root), "--keep-last", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["removed"]) == 12
    assert out["not_removed"][0]["path"] == str(oldest)
    assert sorted(p.name for p in oldest.iterdir()) == sorted(
        p.name for p in one_snapshot.iterdir()
    )


def test_forget_without_a_rule_or_with_bad_values_is_refused(tmp_path, one_snapshot, capsys):
    root = _month_root(tmp_path, one_snapshot)
    capsys.readouterr()
    assert main(["forget", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "no retention rule" in err and err.count("\n") == 1
    assert main(["forget", "--root", str(root), "--keep-within", "2w"]) == 2
    assert "--keep-within" in capsys.readouterr().err
    assert main(["forget", "--root", str(tmp_path / "nope"), "--keep-last", "1"]) == 2
    assert len(_names(root)) == 15


def test_tenants_are_independent(tmp_path, one_snapshot):
    root = _month_root(tmp_path, one_snapshot, "acme")
    _place(one_snapshot, root, "globex", snapshot_name(_t("2026-01-01T00:00")))
    assert main(["forget", "--root", str(root), "--tenant", "acme", "--keep-last", "1"]) == 0
    assert len(_names(root, "acme")) == 1 and len(_names(root, "globex")) == 1
    assert main(["forget", "--root", str(root), "--keep-daily", "unlimited"]) == 0
    assert len(_names(root, "globex")) == 1


def test_policy_from_mapping_round_trips():
    p = Policy.from_mapping({"daily": 7, "weekly": 4, "within": "1y6m"})
    assert p.to_json() == {"daily": 7, "weekly": 4, "within": "1y6m"}


def test_a_second_forget_on_the_same_root_waits_then_gives_up(
    tmp_path, one_snapshot, capsys, monkeypatch
):
    import fcntl
    import os

    import longmem_etl.retention as retention

    root = _month_root(tmp_path, one_snapshot)
    fd = os.open(root / retention.FORGET_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another forget holds the root
    monkeypatch.setattr(retention, "LOCK_WAIT_S", 0.3)
    try:
        capsys.readouterr()
        assert main(["forget", "--root", str(root), "--keep-last", "1"]) == 3
        assert "another forget" in capsys.readouterr().err
        assert len(_names(root)) == 15
        assert main(["forget", "--root", str(root), "--keep-last", "1", "--dry-run"]) == 0
    finally:
        os.close(fd)
    assert main(["forget", "--root", str(root), "--keep-last", "1"]) == 0
    assert len(_names(root)) == 1

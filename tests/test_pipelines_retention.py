"""The Dagster backup takes a retention policy (restic's rules) and forgets after each backup; the
schedule carries the policy from ``$LONGMEM_ETL_RETENTION``."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from dagster import DagsterInstance, build_schedule_context, materialize

from longmem_etl.errors import BadInput
from longmem_etl.retention import Policy, parse_policy
from pipelines.backup.assets import memories_snapshot
from pipelines.backup.schedules import daily_backup
from pipelines.partitions import register_tenants
from pipelines.resources import default_resources
from pipelines.utils import latest_metadata


@pytest.fixture
def env(etl_state, tmp_path, monkeypatch):
    state = etl_state
    instance = DagsterInstance.ephemeral()
    register_tenants(instance, ["acme-small"])
    return state, instance


def test_schedule_carries_the_policy_from_the_environment(env, monkeypatch, tmp_path):
    (tmp_path / "dagster").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster"))
    register_tenants(instance, ["acme-small"])
    monkeypatch.setenv("LONGMEM_ETL_RETENTION", "last=1, daily=7,keep-weekly=4,within=30d")
    when = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)
    (req,) = daily_backup(build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert req.run_config == {
        "ops": {
            "memories_snapshot": {
                "config": {"keep": 1, "keep_daily": 7, "keep_weekly": 4, "keep_within": "30d"}
            }
        }
    }
    assert parse_policy("daily=unlimited") == Policy(daily=-1)
    for bad in ("daily", "daily=x", "fortnightly=2", "within=2w"):
        with pytest.raises(BadInput):
            parse_policy(bad)


def test_backup_asset_forgets_by_policy_after_each_backup(env):
    state, instance = env
    config = {"ops": {"memories_snapshot": {"config": {"keep": 0, "keep_daily": 1}}}}
    for _ in range(3):
        result = materialize(
            [memories_snapshot],
            partition_key="acme-small",
            resources=default_resources(),
            instance=instance,
            run_config=config,
        )
        assert result.success
    snaps = list((state / "snapshots" / "tenant=acme-small").glob("snapshot=*"))
    assert len(snaps) == 1  # three backups on one UTC day: its newest is kept
    meta = latest_metadata(instance, memories_snapshot.key, "acme-small")
    assert meta["retention"] == {"daily": 1} and meta["pruned"] == 1
    assert str(snaps[0]) == str(meta["snapshot_path"])

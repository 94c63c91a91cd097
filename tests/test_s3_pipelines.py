"""The Dagster backup graph with its snapshot root on S3 (the loopback server of tests/s3_support.py):
snapshots land in the bucket, checks read them there, the clean derives from the S3 snapshot, and
metadata names s3:// URLs, never the private mirror nor a credential."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, materialize
from s3_support import ACCESS_KEY, SECRET_KEY

from pipelines.analysis.assets import memories_clean
from pipelines.backup.assets import account_dump, memories_snapshot
from pipelines.definitions import CHECKS
from pipelines.partitions import register_tenants
from pipelines.resources import default_resources
from pipelines.utils import latest_metadata


@pytest.fixture
def instance(etl_state, tmp_path, monkeypatch, s3):

    inst = DagsterInstance.ephemeral()
    register_tenants(inst)
    return inst


def test_backup_clean_and_checks_on_an_s3_root(instance, s3, s3_bucket, monkeypatch):
    monkeypatch.setenv("LONGMEM_ETL_ROOT", f"s3://{s3_bucket}/snapshots")
    monkeypatch.setenv("LONGMEM_ETL_CLEAN_ROOT", f"s3://{s3_bucket}/clean")
    checks = [c for c in CHECKS if any(k.asset_key == memories_snapshot.key for k in c.check_keys)]
    result = materialize(
        [memories_snapshot, account_dump, memories_clean, *checks],
        partition_key="acme",
        resources=default_resources(),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals and all(evals.values()), evals
    snap = latest_metadata(instance, memories_snapshot.key, "acme")
    path = str(snap["snapshot_path"])
    assert path.startswith(f"s3://{s3_bucket}/snapshots/tenant=acme/snapshot=")
    keys = s3.keys(s3_bucket)
    assert path.split("/", 3)[3] + "/manifest.json" in keys
    clean = latest_metadata(instance, memories_clean.key, "acme")
    assert str(clean["snapshot_path"]).startswith(f"s3://{s3_bucket}/clean/tenant=acme/")
    assert any(k.startswith("clean/tenant=acme/") and k.endswith("manifest.json") for k in keys)
    text = json.dumps({k: str(v) for k, v in {**snap, **clean}.items()})
    assert "longmem-etl-s3-" not in text and SECRET_KEY not in text and ACCESS_KEY not in text

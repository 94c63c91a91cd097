"""Checks on the backup snapshot: manifest counts, unique ids, schema (all blocking)."""

from pipelines.snapshot_checks import build_snapshot_checks

backup_checks = build_snapshot_checks("memories_snapshot")

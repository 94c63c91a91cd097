"""Backup domain: export each tenant, keep it as a dump and a verified Parquet snapshot, daily."""

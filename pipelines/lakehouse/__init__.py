"""The lakehouse domain: Iceberg tables kept in step with the backup and clean roots."""

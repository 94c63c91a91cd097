"""Analysis domain: cleaned snapshots (declarative spec) and a DuckDB warehouse per tenant."""

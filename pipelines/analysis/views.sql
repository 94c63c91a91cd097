-- The views the warehouse file exposes (for the materialization's metadata).
SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name

-- Memories per collection in one snapshot, for the materialization's markdown table.
-- $memories: path of memories.parquet
SELECT coalesce(collection, '(none)') AS collection, count(*) AS memories
FROM read_parquet($memories)
GROUP BY 1
ORDER BY memories DESC, collection

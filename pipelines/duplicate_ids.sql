-- Ids that appear more than once in a snapshot's memories (a snapshot must have none).
-- $memories: path of memories.parquet
SELECT id, count(*) AS n
FROM read_parquet($memories)
GROUP BY id
HAVING count(*) > 1
ORDER BY n DESC, id
LIMIT 20

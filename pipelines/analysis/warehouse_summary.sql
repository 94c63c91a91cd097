-- One line per cleaned snapshot of the tenant: how many memories and collections it holds.
-- $tenant: the partition's tenant
SELECT snapshot, count(*) AS memories, count(DISTINCT collection) AS collections
FROM memories
WHERE tenant = $tenant
GROUP BY snapshot
ORDER BY snapshot DESC

-- Memories created per week (ISO weeks, Monday, UTC), by collection and by category, in one pass
-- (report figure "created_weekly"). dimension is 'collection' or 'category'; a NULL value is
-- shown as '(none)'. Memories without created_at are counted in the overview, not here.
SELECT
    CASE WHEN grouping(collection) = 0 THEN 'collection' ELSE 'category' END AS dimension,
    CAST(date_trunc('week', created_at) AS DATE) AS week,
    coalesce(CASE WHEN grouping(collection) = 0 THEN collection ELSE category END, '(none)') AS value,
    count(*) AS memories
FROM report_memories
WHERE created_at IS NOT NULL
GROUP BY GROUPING SETS ((date_trunc('week', created_at), collection),
                        (date_trunc('week', created_at), category))
ORDER BY dimension, week, value

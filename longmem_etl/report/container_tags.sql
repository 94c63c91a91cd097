-- The $top most used container tags (NULL shown as '(none)'), and one '(other)' row for the rest
-- (report figure "container_tags").
WITH counted AS (
    SELECT coalesce(container_tag, '(none)') AS container_tag, count(*) AS memories
    FROM report_memories
    GROUP BY ALL
), ranked AS (
    SELECT *, row_number() OVER (ORDER BY memories DESC, container_tag) AS rank FROM counted
)
SELECT CASE WHEN rank <= $top THEN container_tag ELSE '(other)' END AS container_tag,
       sum(memories) AS memories,
       min(rank) AS rank
FROM ranked
GROUP BY ALL
ORDER BY rank

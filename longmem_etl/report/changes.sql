-- Added / removed / changed memories per collection between two snapshots (report figure
-- "changes"): the diff of longmem_etl/snapshots/diff.sql (variables snap_a, snap_b), counted.
-- Reads the temp view report_diff (that query's rows).
SELECT coalesce(collection, '(none)') AS collection,
       count_if(change = 'added') AS added,
       count_if(change = 'removed') AS removed,
       count_if(change = 'changed') AS changed
FROM report_diff
GROUP BY ALL
ORDER BY added + removed + changed DESC, collection

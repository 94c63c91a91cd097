-- Rows the transform removed: the clean snapshot's rejected rows from transform steps
-- (stage 'convert' rows, if any, were rejected before cleaning and are not this run's doing).
-- $rejected: path of the clean snapshot's rejected.parquet
SELECT stage, count(*) AS n
FROM read_parquet($rejected)
WHERE stage <> 'convert'
GROUP BY stage
ORDER BY stage

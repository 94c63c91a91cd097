-- Importance and text-length histograms in one pass (report figure "distributions").
-- measure 'importance': buckets [0, 0.1), ..., [0.9, 1.0]; values outside [0, 1] are 'below 0' /
-- 'above 1'; NULL is '(none)'. measure 'text_length' (characters): powers-of-two-ish buckets.
-- bucket_order sorts the buckets.
WITH b AS (
    SELECT
        CASE WHEN importance IS NULL THEN '(none)'
             WHEN isnan(importance) THEN '(NaN)'
             WHEN importance < 0 THEN 'below 0'
             WHEN importance > 1 THEN 'above 1'
             ELSE printf('%.1f', least(floor(importance * 10), 9) / 10) END AS imp,
        CASE WHEN importance IS NULL OR isnan(importance) THEN 99
             WHEN importance < 0 THEN -1
             WHEN importance > 1 THEN 11
             ELSE least(floor(importance * 10), 9) END AS imp_order,
        CASE WHEN text IS NULL THEN '(none)'
             WHEN length(text) < 16 THEN '0-15'
             WHEN length(text) < 64 THEN '16-63'
             WHEN length(text) < 256 THEN '64-255'
             WHEN length(text) < 1024 THEN '256-1023'
             WHEN length(text) < 4096 THEN '1024-4095'
             WHEN length(text) < 16384 THEN '4096-16383'
             ELSE '16384+' END AS len,
        CASE WHEN text IS NULL THEN 99
             ELSE least(greatest(floor(log(4, greatest(length(text), 1) / 4)), 0), 6) END AS len_order
    FROM report_memories
)
SELECT
    CASE WHEN grouping(imp) = 0 THEN 'importance' ELSE 'text_length' END AS measure,
    CASE WHEN grouping(imp) = 0 THEN imp ELSE len END AS bucket,
    CAST(CASE WHEN grouping(imp) = 0 THEN min(imp_order) ELSE min(len_order) END AS INTEGER) AS bucket_order,
    count(*) AS memories
FROM b
GROUP BY GROUPING SETS ((imp), (len))
ORDER BY measure, bucket_order, bucket

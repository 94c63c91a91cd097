-- Importance and text-length histograms in one pass (report figure "distributions").
-- measure 'importance': buckets [0, 0.1), ..., [0.9, 1.0]; values outside [0, 1] are 'below 0' /
-- 'above 1'; NULL is '(none)'. measure 'text_length' (characters): powers-of-two-ish buckets.
-- bucket_order sorts the buckets. length() counts characters (a scan of the UTF-8): once per row.
WITH l AS (
    SELECT importance, length(text) AS n FROM report_memories
), b AS (
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
        CASE WHEN n IS NULL THEN '(none)'
             WHEN n < 16 THEN '0-15'
             WHEN n < 64 THEN '16-63'
             WHEN n < 256 THEN '64-255'
             WHEN n < 1024 THEN '256-1023'
             WHEN n < 4096 THEN '1024-4095'
             WHEN n < 16384 THEN '4096-16383'
             ELSE '16384+' END AS len,
        CASE WHEN n IS NULL THEN 99
             WHEN n < 16 THEN 0 WHEN n < 64 THEN 1 WHEN n < 256 THEN 2 WHEN n < 1024 THEN 3
             WHEN n < 4096 THEN 4 WHEN n < 16384 THEN 5 ELSE 6 END AS len_order
    FROM l
)
SELECT
    CASE WHEN grouping(imp) = 0 THEN 'importance' ELSE 'text_length' END AS measure,
    CASE WHEN grouping(imp) = 0 THEN imp ELSE len END AS bucket,
    CAST(CASE WHEN grouping(imp) = 0 THEN min(imp_order) ELSE min(len_order) END AS INTEGER) AS bucket_order,
    count(*) AS memories
FROM b
GROUP BY GROUPING SETS ((imp), (len))
ORDER BY measure, bucket_order, bucket

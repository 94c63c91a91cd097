-- Duplicates per collection, in one pass (report figure "duplicates"). Scope: the `dedup` step's
-- default (same collection and container_tag). "exact": the same text byte for byte;
-- "normalised": the same dedup key (NFKC, case folded, zero-width/control characters removed,
-- whitespace collapsed, trimmed) - what a `dedup` step would reject. *_duplicates counts the
-- copies beyond the first (rows a dedup would remove); *_groups the texts that repeat.
-- Needs the lm_dedup_key function (longmem_etl.transforms.sqlparts.register); the key expression
-- is substituted for {dedup_key}.
WITH k AS (
    SELECT collection, container_tag, text, {dedup_key} AS nkey
    FROM report_memories
    WHERE text IS NOT NULL
), g AS (
    SELECT collection,
           grouping(text) = 0 AS exact,
           count(*) AS n
    FROM k
    GROUP BY GROUPING SETS ((collection, container_tag, text), (collection, container_tag, nkey))
    HAVING count(*) > 1
), per AS (
    SELECT collection,
           sum(n - 1) FILTER (WHERE exact) AS exact_duplicates,
           count(*) FILTER (WHERE exact) AS exact_groups,
           sum(n - 1) FILTER (WHERE NOT exact) AS normalised_duplicates,
           count(*) FILTER (WHERE NOT exact) AS normalised_groups
    FROM g
    GROUP BY collection
), sizes AS (
    SELECT collection, count(*) AS memories FROM report_memories GROUP BY collection
)
SELECT coalesce(s.collection, '(none)') AS collection,
       s.memories,
       CAST(coalesce(p.exact_duplicates, 0) AS BIGINT) AS exact_duplicates,
       coalesce(p.exact_groups, 0) AS exact_groups,
       CAST(coalesce(p.normalised_duplicates, 0) AS BIGINT) AS normalised_duplicates,
       coalesce(p.normalised_groups, 0) AS normalised_groups
FROM sizes s LEFT JOIN per p ON s.collection IS NOT DISTINCT FROM p.collection
ORDER BY normalised_duplicates DESC, collection

-- Memories added, removed and changed between two snapshots (longmem-etl diff).
--
-- Run it yourself in DuckDB (the CLI, Python, or any client):
--   SET VARIABLE snap_a = 'snapshots/tenant=acme/snapshot=20250101T000000Z';
--   SET VARIABLE snap_b = 'snapshots/tenant=acme/snapshot=20250102T000000Z';
--   .read longmem_etl/snapshots/diff.sql        -- (or paste the query)
--
-- One row per difference: change = 'added' (id only in B), 'removed' (id only in A) or 'changed'
-- (same id, any field differs). changed_fields lists which of the typed columns, metadata, extra
-- (unknown fields) and fidelity differ. JSON columns are compared after json() normalisation
-- (whitespace does not count; key order inside objects does). Timestamps compare as instants.
WITH a AS (
    SELECT * FROM read_parquet(getvariable('snap_a') || '/memories.parquet')
), b AS (
    SELECT * FROM read_parquet(getvariable('snap_b') || '/memories.parquet')
), joined AS (
    SELECT
        coalesce(a.id, b.id) AS id,
        CASE WHEN a.id IS NULL THEN 'added' WHEN b.id IS NULL THEN 'removed' ELSE 'changed' END AS change,
        coalesce(b.collection, a.collection) AS collection,
        a.text AS text_a,
        b.text AS text_b,
        CASE WHEN a.id IS NOT NULL AND b.id IS NOT NULL THEN list_filter([
            CASE WHEN a.collection IS DISTINCT FROM b.collection THEN 'collection' END,
            CASE WHEN a.text IS DISTINCT FROM b.text THEN 'text' END,
            CASE WHEN a.importance IS DISTINCT FROM b.importance THEN 'importance' END,
            CASE WHEN a.category IS DISTINCT FROM b.category THEN 'category' END,
            CASE WHEN json(a.metadata) IS DISTINCT FROM json(b.metadata) THEN 'metadata' END,
            CASE WHEN a.source IS DISTINCT FROM b.source THEN 'source' END,
            CASE WHEN a.container_tag IS DISTINCT FROM b.container_tag THEN 'container_tag' END,
            CASE WHEN a.pinned IS DISTINCT FROM b.pinned THEN 'pinned' END,
            CASE WHEN a.archived IS DISTINCT FROM b.archived THEN 'archived' END,
            CASE WHEN a.created_at IS DISTINCT FROM b.created_at THEN 'created_at' END,
            CASE WHEN a.updated_at IS DISTINCT FROM b.updated_at THEN 'updated_at' END,
            CASE WHEN a.expires_at IS DISTINCT FROM b.expires_at THEN 'expires_at' END,
            CASE WHEN a.superseded_by IS DISTINCT FROM b.superseded_by THEN 'superseded_by' END,
            CASE WHEN json(a.extra) IS DISTINCT FROM json(b.extra) THEN 'extra' END,
            CASE WHEN json(a.fidelity) IS DISTINCT FROM json(b.fidelity) THEN 'fidelity' END
        ], lambda x: x IS NOT NULL) ELSE [] END AS changed_fields
    FROM a FULL OUTER JOIN b ON a.id = b.id
)
SELECT change, id, collection, changed_fields, text_a, text_b
FROM joined
WHERE change <> 'changed' OR len(changed_fields) > 0
ORDER BY CASE change WHEN 'added' THEN 0 WHEN 'removed' THEN 1 ELSE 2 END, id

-- Shares of the tenant's snapshot: one row (report figure "overview").
-- Reads the temp view report_memories (one snapshot of one tenant); $as_of is the snapshot's
-- time (expired / stale are judged as of then, so a report of a snapshot never changes);
-- $stale_days: a memory is stale when its updated_at (else created_at) is older than that.
SELECT
    count(*) AS memories,
    count(DISTINCT collection) AS collections,
    count_if(coalesce(pinned, false)) AS pinned,
    count_if(coalesce(archived, false)) AS archived,
    count_if(expires_at IS NOT NULL AND expires_at <= $as_of) AS expired,
    count_if(superseded_by IS NOT NULL) AS superseded,
    count_if(coalesce(updated_at, created_at) < $as_of - to_days(CAST($stale_days AS INTEGER))) AS stale,
    count_if(created_at IS NULL) AS no_created_at,
    min(created_at) AS first_created,
    max(created_at) AS last_created,
    CAST(avg(n) AS DOUBLE) AS mean_text_length,
    max(n) AS max_text_length
FROM (SELECT *, length(text) AS n FROM report_memories)

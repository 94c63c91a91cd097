-- Rejected rows by stage and reason (report figure "rejected"), over the snapshot and its parents
-- (a clean's rejected rows are in the cleaned snapshot; the convert/backup stage's in the first
-- one). Reads the temp view report_rejected. stage is 'convert' or the clean step's name. Reasons
-- that name a row or value ("duplicate of ID", "expired at TIME", "... 'VALUE' ...") are grouped by
-- their fixed part: the id, time or quoted value is replaced by '…', so no value is shown.
SELECT snapshot,
       stage,
       regexp_replace(
           regexp_replace(reason, '(duplicate of|superseded by) .*$', '\1 …'),
           '''[^'']*''|"[^"]*"|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+(Z|[+-][0-9:]+)?', '…', 'g'
       ) AS reason,
       count(*) AS rows
FROM report_rejected
GROUP BY ALL
ORDER BY snapshot, rows DESC, stage, reason

-- Fleet status by provider as of a date: each terminal's newest status event (issued, activated,
-- stopped, replaced) recorded at or before the cut. Same counts as
-- `replay fleet --as-of 2026-01-01T00:00:00Z` (the literal is UTC: run with the session time zone UTC).
WITH newest AS (
  SELECT
    device,
    provider,
    type,
    ROW_NUMBER() OVER (PARTITION BY device ORDER BY position DESC) AS rank_from_newest
  FROM events
  WHERE recorded_at <= TIMESTAMP '2026-01-01 00:00:00'
    AND type IN ('issued', 'activated', 'stopped', 'replaced')
)
SELECT
  provider,
  COUNT(*) AS terminals,
  SUM(CASE WHEN type = 'issued' THEN 1 ELSE 0 END) AS issued,
  SUM(CASE WHEN type = 'activated' THEN 1 ELSE 0 END) AS active,
  SUM(CASE WHEN type = 'stopped' THEN 1 ELSE 0 END) AS stopped,
  SUM(CASE WHEN type = 'replaced' THEN 1 ELSE 0 END) AS replaced
FROM newest
WHERE rank_from_newest = 1
GROUP BY provider
ORDER BY provider

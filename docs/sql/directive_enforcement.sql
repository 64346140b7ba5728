-- Directive enforcement: terminals of a model a directive lists that were still running when it had
-- to be enforced: not stopped by the deadline (or by the end of the log when there is no deadline or
-- it is later), or issued after it and still running at the end. The rule of
-- `replay audit --rule directive_not_enforced`, one row per finding.
WITH log_end AS (
  SELECT occurred_at AS end_at
  FROM (
    SELECT position, occurred_at FROM events
    UNION ALL
    SELECT position, occurred_at FROM directives
  ) everything
  ORDER BY position DESC
  LIMIT 1
),
checks AS (
  SELECT
    dm.directive,
    dm.model,
    CASE WHEN dm.deadline IS NOT NULL AND dm.deadline < e.end_at THEN dm.deadline ELSE e.end_at END AS check_at
  FROM directive_models dm
  CROSS JOIN log_end e
),
stops AS (
  SELECT device, MIN(occurred_at) AS stopped_at
  FROM events
  WHERE type = 'stopped'
  GROUP BY device
)
SELECT
  c.directive,
  t.provider,
  t.model,
  t.device,
  t.status,
  c.check_at
FROM checks c
JOIN terminals t ON t.model = c.model
LEFT JOIN stops s ON s.device = t.device
WHERE (t.issued_at <= c.check_at AND (s.stopped_at IS NULL OR s.stopped_at > c.check_at))
   OR (t.issued_at > c.check_at AND t.status IN ('issued', 'active'))
ORDER BY c.directive, t.device

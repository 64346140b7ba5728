-- Fleet status by provider, from the terminals table (the fleet projection at the end of the log).
-- Same counts as `replay fleet`: its totals are the sums of these rows.
SELECT
  provider,
  COUNT(*) AS terminals,
  SUM(CASE WHEN status = 'issued' THEN 1 ELSE 0 END) AS issued,
  SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END) AS active,
  SUM(CASE WHEN status = 'stopped' THEN 1 ELSE 0 END) AS stopped,
  SUM(CASE WHEN status = 'replaced' THEN 1 ELSE 0 END) AS replaced,
  SUM(CASE WHEN open_flags IS NOT NULL THEN 1 ELSE 0 END) AS flagged,
  SUM(CASE WHEN contract = 'expired' THEN 1 ELSE 0 END) AS contract_expired
FROM terminals
GROUP BY provider
ORDER BY provider

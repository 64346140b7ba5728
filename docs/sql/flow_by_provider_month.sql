-- Transaction flow by provider and month (the month of the flow's own time in China Standard Time,
-- UTC+8: the `month` column and partition). Money stays integer fen.
SELECT
  provider,
  month,
  COUNT(*) AS flows,
  SUM(amount_fen) AS amount_fen,
  SUM(transactions) AS transactions
FROM events
WHERE type = 'flow'
GROUP BY provider, month
ORDER BY provider, month

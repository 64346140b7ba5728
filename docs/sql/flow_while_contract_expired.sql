-- Flow while the contract is expired: a flow whose terminal's latest contract event before it (issued,
-- contract_renewed, contract_expired) is contract_expired. The rule of
-- `replay audit --rule flow_while_contract_expired`, one row per finding.
WITH marked AS (
  SELECT
    position,
    device,
    provider,
    month,
    type,
    amount_fen,
    MAX(CASE WHEN type IN ('issued', 'contract_renewed', 'contract_expired') THEN position END)
      OVER (PARTITION BY device ORDER BY position ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS contract_position
  FROM events
)
SELECT
  m.provider,
  m.month,
  m.device,
  m.position,
  m.amount_fen
FROM marked m
JOIN events c ON c.position = m.contract_position
WHERE m.type = 'flow' AND c.type = 'contract_expired'
ORDER BY m.position

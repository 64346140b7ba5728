-- One SN, one binding (一机一码): the same SN issued in two ledgers while both bindings are live. A
-- binding is live from its `issued` (event time) until its first `stopped` (exclusive); a contract
-- expiry does not end it. One row per pair, at the later `issued` (equal times: the larger ledger id
-- is the later), naming the earlier. The rule of `replay audit A B ... --rule one_sn_one_binding`; on a
-- single-source export (one ledger id) it has no rows.
WITH stops AS (
  SELECT ledger_id, device, MIN(occurred_at) AS stopped_at
  FROM events
  WHERE type = 'stopped'
  GROUP BY ledger_id, device
),
bindings AS (
  SELECT i.ledger_id, i.device, i.provider, i.position, i.occurred_at AS issued_at, s.stopped_at
  FROM events i
  LEFT JOIN stops s ON s.ledger_id = i.ledger_id AND s.device = i.device
  WHERE i.type = 'issued'
)
SELECT
  b.device,
  b.ledger_id,
  b.position,
  b.issued_at,
  b.stopped_at,
  a.ledger_id AS other_ledger_id,
  a.position AS other_position,
  a.issued_at AS other_issued_at,
  a.stopped_at AS other_stopped_at
FROM bindings a
JOIN bindings b
  ON a.device = b.device
 AND a.ledger_id <> b.ledger_id
 AND (a.issued_at < b.issued_at OR (a.issued_at = b.issued_at AND a.ledger_id < b.ledger_id))
WHERE (a.stopped_at IS NULL OR b.issued_at < a.stopped_at)
  AND (b.stopped_at IS NULL OR a.issued_at < b.stopped_at)
ORDER BY b.device, b.ledger_id, b.position

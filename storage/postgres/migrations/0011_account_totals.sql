-- Every account with its totals, as the ledger reads them (the same view exists in SQLite).
-- Member and pool accounts keep running totals (their balance rule needs them at write time);
-- the issuance and spend accounts' totals are summed from the entries here, since no write
-- updates those two rows (see transfers_apply in 0001).
CREATE VIEW account_totals AS
SELECT a.id, a.kind, a.guild_id, a.user_id,
       COALESCE(s.debits_pending, a.debits_pending) AS debits_pending,
       COALESCE(s.debits_posted, a.debits_posted) AS debits_posted,
       COALESCE(s.credits_pending, a.credits_pending) AS credits_pending,
       COALESCE(s.credits_posted, a.credits_posted) AS credits_posted,
       a.created_at_ms
FROM accounts AS a
LEFT JOIN LATERAL (
    SELECT
        COALESCE(SUM(t.amount) FILTER (WHERE t.debit_account_id = a.id AND t.kind = 'pending'
            AND NOT EXISTS (SELECT 1 FROM transfers AS r WHERE r.pending_id = t.id)), 0)
            AS debits_pending,
        COALESCE(SUM(t.amount) FILTER (WHERE t.debit_account_id = a.id
            AND t.kind IN ('single', 'post')), 0) AS debits_posted,
        COALESCE(SUM(t.amount) FILTER (WHERE t.credit_account_id = a.id AND t.kind = 'pending'
            AND NOT EXISTS (SELECT 1 FROM transfers AS r WHERE r.pending_id = t.id)), 0)
            AS credits_pending,
        COALESCE(SUM(t.amount) FILTER (WHERE t.credit_account_id = a.id
            AND t.kind IN ('single', 'post')), 0) AS credits_posted
    FROM transfers AS t
    WHERE a.kind IN ('issuance', 'spend')
      AND (t.debit_account_id = a.id OR t.credit_account_id = a.id)
) AS s ON a.kind IN ('issuance', 'spend');

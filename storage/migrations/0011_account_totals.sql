-- Every account with its totals, as the ledger reads them. In SQLite the accounts table keeps
-- them all running; PostgreSQL sums its two system accounts' totals from the entries instead
-- (see storage/postgres/migrations/0001_ledger.sql), so the ledger reads this view on both.
CREATE VIEW account_totals AS
SELECT id, kind, guild_id, user_id, debits_pending, debits_posted, credits_pending,
       credits_posted, created_at_ms
FROM accounts;

-- Refunds never give back more than was captured for their job, enforced here, inside the
-- statement that would break it, so that no two refunds racing (or any other code path) can
-- overspend the spend account.
--
-- The rule, in words (a PostgreSQL backend mirrors it):
--   * Credits leave the `spend` account only as a one-phase (`single`) transfer that names a job
--     (transfers.job_id is not NULL): a refund.
--   * For every job, the credits moved out of `spend` for it (single transfers debiting spend)
--     never exceed the credits posted into `spend` for it (`post` captures and `single` charges
--     such as late captures, crediting spend). Pending holds count only once posted.
--   * A replay of an existing idempotency key is not checked again: it writes nothing, and the
--     ledger compares it with the original.
--   Every credit into spend names its job, so the spend account's posted balance (the money spent)
--   can never go below zero either.
--
-- PostgreSQL: a BEFORE INSERT trigger function on transfers doing the same two checks, after
-- serializing the refunds of one job (for example `PERFORM pg_advisory_xact_lock(hashtext(
-- NEW.job_id))`, or `SELECT ... FROM jobs WHERE id = NEW.job_id FOR UPDATE`): under READ COMMITTED
-- two concurrent inserts would not see each other's row and could both pass. SQLite needs no lock:
-- it has one writer at a time.

CREATE TRIGGER transfers_refund_within_capture BEFORE INSERT ON transfers
WHEN NEW.debit_account_id = (SELECT id FROM accounts WHERE kind = 'spend')
 AND NOT EXISTS (SELECT 1 FROM transfers WHERE idempotency_key = NEW.idempotency_key)
BEGIN
    SELECT RAISE(ABORT, 'refund exceeds what was captured for the job: a refund must name its job')
    WHERE NEW.job_id IS NULL OR NEW.kind <> 'single';
    SELECT RAISE(ABORT, 'refund exceeds what was captured for the job')
    WHERE NEW.amount
        + (SELECT COALESCE(SUM(amount), 0) FROM transfers
           WHERE job_id = NEW.job_id AND debit_account_id = NEW.debit_account_id
             AND kind = 'single')
        > (SELECT COALESCE(SUM(amount), 0) FROM transfers
           WHERE job_id = NEW.job_id AND credit_account_id = NEW.debit_account_id
             AND kind IN ('single', 'post'));
END;

-- Refunds never give back more than was captured for their job, enforced here, inside the
-- statement that would break it, so that no two refunds racing (or any other code path) can
-- overspend the spend account. PostgreSQL mirror of storage/migrations/0008_refund_limit.sql;
-- the rule, in words, is written there.
--
-- Concurrency. The check reads the job's earlier transfers and then the row is inserted; two
-- refunds of one job in two transactions would not see each other's uncommitted row and could
-- both pass. So the trigger first takes a transaction-scoped advisory lock on the job
-- (pg_advisory_xact_lock, two-key form: class hashtext('klingbot.refund'), key hashtext(job id);
-- the two-key space never meets a one-key lock such as the migration runner's), held until the
-- transaction ends. The second refund of a job waits there until the first has committed or
-- rolled back, then:
--   * under READ COMMITTED each statement of this function takes a new snapshot, so the key
--     lookup and the sums below see the first refund (a replay of its key is then let through
--     to ON CONFLICT DO NOTHING; a second refund is checked against the new total);
--   * under SERIALIZABLE (write functions) the snapshot is older than the first refund, but each
--     refund read the job's transfers that the other inserts, so one of them fails with a
--     serialization failure (40001) and its retry sees the other (REPEATABLE READ would not catch
--     this, since no entry updates the spend account's row any more; nothing runs at that level).
-- Hash collisions between jobs only make unrelated refunds wait for each other.

CREATE FUNCTION transfers_refund_within_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.debit_account_id IS DISTINCT FROM (SELECT id FROM accounts WHERE kind = 'spend') THEN
        RETURN NEW;
    END IF;
    IF NEW.job_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('klingbot.refund'), hashtext(NEW.job_id));
    END IF;
    -- A replay of an existing idempotency key is not checked again: ON CONFLICT skips it.
    IF EXISTS (SELECT 1 FROM transfers WHERE idempotency_key = NEW.idempotency_key) THEN
        RETURN NEW;
    END IF;
    IF NEW.job_id IS NULL OR NEW.kind <> 'single' THEN
        RAISE EXCEPTION 'refund exceeds what was captured for the job: a refund must name its job'
            USING ERRCODE = '23000', CONSTRAINT = TG_NAME;
    END IF;
    IF NEW.amount
        + (SELECT COALESCE(SUM(amount), 0) FROM transfers
           WHERE job_id = NEW.job_id AND debit_account_id = NEW.debit_account_id
             AND kind = 'single')
        > (SELECT COALESCE(SUM(amount), 0) FROM transfers
           WHERE job_id = NEW.job_id AND credit_account_id = NEW.debit_account_id
             AND kind IN ('single', 'post'))
    THEN
        RAISE EXCEPTION 'refund exceeds what was captured for the job'
            USING ERRCODE = '23000', CONSTRAINT = TG_NAME;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER transfers_refund_within_capture BEFORE INSERT ON transfers
FOR EACH ROW
EXECUTE FUNCTION transfers_refund_within_capture();

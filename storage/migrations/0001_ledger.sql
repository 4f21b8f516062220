-- The credit ledger: accounts with running totals, and immutable two-phase transfers.
-- Every rule that protects money is enforced here, inside the statement that tries to break it.

CREATE TABLE db_heartbeat (at_ms INTEGER NOT NULL);
INSERT INTO db_heartbeat (at_ms) VALUES (0);

CREATE TABLE accounts (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL CHECK (kind IN ('issuance', 'spend', 'pool', 'member')),
    guild_id        INTEGER NOT NULL DEFAULT 0,
    user_id         INTEGER NOT NULL DEFAULT 0,
    debits_pending  INTEGER NOT NULL DEFAULT 0,
    debits_posted   INTEGER NOT NULL DEFAULT 0,
    credits_pending INTEGER NOT NULL DEFAULT 0,
    credits_posted  INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    UNIQUE (kind, guild_id, user_id),
    CONSTRAINT totals_nonnegative CHECK (
        debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0),
    CONSTRAINT available_nonnegative CHECK (
        kind IN ('issuance', 'spend') OR credits_posted - debits_posted - debits_pending >= 0)
);

INSERT INTO accounts (kind, created_at_ms) VALUES ('issuance', 0), ('spend', 0);

-- Running totals change only while an entry is being applied (see transfers_apply).
CREATE TABLE ledger_guard (applying INTEGER NOT NULL);
INSERT INTO ledger_guard (applying) VALUES (0);

CREATE TRIGGER accounts_totals_guard
BEFORE UPDATE OF debits_pending, debits_posted, credits_pending, credits_posted ON accounts
WHEN (SELECT applying FROM ledger_guard) = 0
BEGIN
    SELECT RAISE(ABORT, 'account totals change only through ledger entries');
END;

CREATE TRIGGER accounts_identity_immutable
BEFORE UPDATE OF kind, guild_id, user_id ON accounts
BEGIN
    SELECT RAISE(ABORT, 'accounts cannot be re-assigned');
END;

CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
BEGIN
    SELECT RAISE(ABORT, 'accounts cannot be deleted');
END;

-- kind: single (one-phase move), pending (hold), post (capture, <= held), void, expire.
CREATE TABLE transfers (
    id                INTEGER PRIMARY KEY,
    idempotency_key   TEXT    NOT NULL UNIQUE,
    kind              TEXT    NOT NULL CHECK (kind IN ('single', 'pending', 'post', 'void', 'expire')),
    debit_account_id  INTEGER NOT NULL REFERENCES accounts (id),
    credit_account_id INTEGER NOT NULL REFERENCES accounts (id),
    amount            INTEGER NOT NULL CHECK (amount >= 0),
    pending_id        INTEGER REFERENCES transfers (id),
    reason            TEXT    NOT NULL,
    guild_id          INTEGER NOT NULL DEFAULT 0,
    user_id           INTEGER NOT NULL DEFAULT 0,
    actor_id          INTEGER NOT NULL DEFAULT 0,
    job_id            TEXT,
    memo              TEXT,
    created_at_ms     INTEGER NOT NULL,
    CHECK (debit_account_id <> credit_account_id),
    CHECK ((kind IN ('post', 'void', 'expire')) = (pending_id IS NOT NULL)),
    CHECK (amount > 0 OR kind IN ('post', 'void', 'expire'))
);

-- A hold resolves at most once: a second post/void/expire of the same hold violates this index.
CREATE UNIQUE INDEX transfers_one_resolution ON transfers (pending_id) WHERE pending_id IS NOT NULL;
CREATE INDEX transfers_by_debit ON transfers (debit_account_id, created_at_ms);
CREATE INDEX transfers_by_credit ON transfers (credit_account_id, created_at_ms);
CREATE INDEX transfers_by_member ON transfers (guild_id, user_id, created_at_ms);
CREATE INDEX transfers_by_job ON transfers (job_id) WHERE job_id IS NOT NULL;

CREATE TRIGGER transfers_immutable BEFORE UPDATE ON transfers
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are immutable');
END;

CREATE TRIGGER transfers_no_delete BEFORE DELETE ON transfers
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are immutable');
END;

CREATE TRIGGER transfers_check_resolution BEFORE INSERT ON transfers
WHEN NEW.pending_id IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'hold not found')
    WHERE NOT EXISTS (SELECT 1 FROM transfers WHERE id = NEW.pending_id AND kind = 'pending');
    SELECT RAISE(ABORT, 'resolution accounts differ from the hold')
    FROM transfers AS p
    WHERE p.id = NEW.pending_id
      AND (p.debit_account_id <> NEW.debit_account_id OR p.credit_account_id <> NEW.credit_account_id);
    SELECT RAISE(ABORT, 'capture exceeds the held amount')
    FROM transfers AS p
    WHERE p.id = NEW.pending_id AND NEW.kind = 'post' AND NEW.amount > p.amount;
    SELECT RAISE(ABORT, 'void or expire must release the held amount')
    FROM transfers AS p
    WHERE p.id = NEW.pending_id AND NEW.kind IN ('void', 'expire') AND NEW.amount <> p.amount;
END;

CREATE TRIGGER transfers_apply AFTER INSERT ON transfers
BEGIN
    UPDATE ledger_guard SET applying = 1;
    UPDATE accounts SET
        debits_pending = debits_pending + CASE NEW.kind
            WHEN 'pending' THEN NEW.amount
            WHEN 'single' THEN 0
            ELSE -(SELECT amount FROM transfers WHERE id = NEW.pending_id) END,
        debits_posted = debits_posted + CASE WHEN NEW.kind IN ('single', 'post') THEN NEW.amount ELSE 0 END
    WHERE id = NEW.debit_account_id;
    UPDATE accounts SET
        credits_pending = credits_pending + CASE NEW.kind
            WHEN 'pending' THEN NEW.amount
            WHEN 'single' THEN 0
            ELSE -(SELECT amount FROM transfers WHERE id = NEW.pending_id) END,
        credits_posted = credits_posted + CASE WHEN NEW.kind IN ('single', 'post') THEN NEW.amount ELSE 0 END
    WHERE id = NEW.credit_account_id;
    UPDATE ledger_guard SET applying = 0;
END;

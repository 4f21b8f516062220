-- Fair queueing in front of submission. A queued job waits in `fair_round` order, FIFO (rowid)
-- within a round: a member's n-th waiting job gets a later round than every member's first, so
-- one eager member cannot take every slot. The order lives in the database and survives restarts.
-- PostgreSQL mirror of storage/migrations/0007_fair_queue.sql (jobs.rowid arrives in 0009, which
-- also adds it to jobs_queue as the key SQLite's index carries implicitly).

ALTER TABLE jobs ADD COLUMN fair_round BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN limits_exempt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN topup_hold_id BIGINT REFERENCES transfers (id);

CREATE INDEX jobs_queue ON jobs (provider, fair_round) WHERE state = 'queued';
CREATE INDEX jobs_live_by_member ON jobs (guild_id, user_id) WHERE state IN ('submitted', 'running');

-- The round of the latest job to leave the queue: new arrivals start there.
CREATE TABLE queue_clock (round BIGINT NOT NULL);
INSERT INTO queue_clock (round) VALUES (0);

-- Per-guild member limits (NULL: the bot-wide default from the settings).
ALTER TABLE guild_policies ADD COLUMN member_max_live BIGINT
    CONSTRAINT guild_policies_member_max_live_positive
    CHECK (member_max_live IS NULL OR member_max_live >= 1);
ALTER TABLE guild_policies ADD COLUMN member_max_queued BIGINT
    CONSTRAINT guild_policies_member_max_queued_nonnegative
    CHECK (member_max_queued IS NULL OR member_max_queued >= 0);
ALTER TABLE guild_policies ADD COLUMN member_cooldown_s BIGINT
    CONSTRAINT guild_policies_member_cooldown_nonnegative
    CHECK (member_cooldown_s IS NULL OR member_cooldown_s >= 0);
ALTER TABLE guild_policies ADD COLUMN moderators_exempt BIGINT NOT NULL DEFAULT 0
    CONSTRAINT guild_policies_moderators_exempt_is_flag CHECK (moderators_exempt IN (0, 1));

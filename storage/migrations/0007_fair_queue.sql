-- Fair queueing in front of submission. A queued job waits in `fair_round` order, FIFO (rowid)
-- within a round: a member's n-th waiting job gets a later round than every member's first, so
-- one eager member cannot take every slot. The order lives in the database and survives restarts.

ALTER TABLE jobs ADD COLUMN fair_round INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN limits_exempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN topup_hold_id INTEGER REFERENCES transfers (id);

CREATE INDEX jobs_queue ON jobs (provider, fair_round) WHERE state = 'queued';
CREATE INDEX jobs_live_by_member ON jobs (guild_id, user_id) WHERE state IN ('submitted', 'running');

-- The round of the latest job to leave the queue: new arrivals start there.
CREATE TABLE queue_clock (round INTEGER NOT NULL);
INSERT INTO queue_clock (round) VALUES (0);

-- Per-guild member limits (NULL: the bot-wide default from the settings).
ALTER TABLE guild_policies ADD COLUMN member_max_live INTEGER CHECK (member_max_live IS NULL OR member_max_live >= 1);
ALTER TABLE guild_policies ADD COLUMN member_max_queued INTEGER CHECK (member_max_queued IS NULL OR member_max_queued >= 0);
ALTER TABLE guild_policies ADD COLUMN member_cooldown_s INTEGER CHECK (member_cooldown_s IS NULL OR member_cooldown_s >= 0);
ALTER TABLE guild_policies ADD COLUMN moderators_exempt INTEGER NOT NULL DEFAULT 0 CHECK (moderators_exempt IN (0, 1));

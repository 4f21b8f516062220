-- Several bot processes sharing one database (issue 12).
-- A job the pipeline works on (at the provider, being completed, or polled late) is worked by one
-- process at a time: the one named in `lease_owner`, until `lease_until_ms`. The owner renews it
-- while it lives; after it lapses another process takes the job over. `lease_poke` asks the owner
-- to look at the job now (a webhook reached another process).

ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE jobs ADD COLUMN lease_poke INTEGER NOT NULL DEFAULT 0 CHECK (lease_poke IN (0, 1));

CREATE INDEX jobs_by_lease ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;

-- Each vendor's create budget (a token bucket), shared by every process: claimed from in the
-- same transaction that moves jobs out of the queue.
CREATE TABLE vendor_rates (
    provider   TEXT    PRIMARY KEY,
    per_min    REAL    NOT NULL CHECK (per_min > 0),  -- the current rate (halved on a 429)
    level      REAL    NOT NULL CHECK (level >= 0),  -- tokens in the bucket at updated_ms
    updated_ms INTEGER NOT NULL,
    resume_ms  INTEGER NOT NULL  -- paused (the vendor asked us to wait) until then
);

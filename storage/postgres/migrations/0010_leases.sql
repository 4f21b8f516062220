-- Several bot processes sharing one database (issue 12); the same as SQLite's 0010_leases.sql.
-- A job the pipeline works on (at the provider, being completed, or polled late) is worked by one
-- process at a time: the one named in `lease_owner`, until `lease_until_ms`. The owner renews it
-- while it lives; after it lapses another process takes the job over. `lease_poke` asks the owner
-- to look at the job now (a webhook reached another process; NOTIFY wakes it sooner).

ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until_ms BIGINT;
ALTER TABLE jobs ADD COLUMN lease_poke BIGINT NOT NULL DEFAULT 0 CHECK (lease_poke IN (0, 1));

CREATE INDEX jobs_by_lease ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;

-- Each vendor's create budget (a token bucket), shared by every process: locked (FOR UPDATE) and
-- claimed from in the same transaction that moves jobs out of the queue.
CREATE TABLE vendor_rates (
    provider   TEXT             PRIMARY KEY,
    per_min    DOUBLE PRECISION NOT NULL CHECK (per_min > 0),
    level      DOUBLE PRECISION NOT NULL CHECK (level >= 0),
    updated_ms BIGINT           NOT NULL,
    resume_ms  BIGINT           NOT NULL
);

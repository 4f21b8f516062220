-- What the job pipeline needs: vendor URLs per job, webhook de-duplication, polling bookkeeping.

ALTER TABLE jobs ADD COLUMN provider_data_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN poll_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN charged INTEGER NOT NULL DEFAULT 0;  -- credits actually captured

CREATE INDEX jobs_by_interaction ON jobs (interaction_id) WHERE interaction_id IS NOT NULL;

-- A clip the vendor made but we could never download is lost: the job fails, the hold is voided.
INSERT INTO job_transitions (from_state, to_state) VALUES ('succeeded', 'failed');

-- One row per webhook delivery we acted on; a retry with the same key is a no-op.
CREATE TABLE webhook_deliveries (
    provider       TEXT    NOT NULL,
    delivery_key   TEXT    NOT NULL,
    job_id         TEXT    NOT NULL REFERENCES jobs (id),
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (provider, delivery_key)
);
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries (received_at_ms);

-- PostgreSQL mirror of storage/migrations/0012_status_shown.sql: what a job's status message
-- was last seen to show once final, so any process can repair a message that is behind.
ALTER TABLE jobs ADD COLUMN status_shown TEXT;
UPDATE jobs SET status_shown = state WHERE state IN ('delivered', 'rejected', 'failed', 'cancelled');
CREATE INDEX jobs_status_behind ON jobs (updated_at_ms)
    WHERE status_message_id IS NOT NULL AND status_shown IS DISTINCT FROM state
      AND state IN ('delivered', 'rejected', 'failed', 'cancelled');

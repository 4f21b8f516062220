-- What a job's status message was last seen to show, once it shows a final state. A process can
-- die between a job's last change and the edit that shows it, and with several processes the
-- edit may be another's to make: any process finds the final jobs whose message is behind and
-- edits it (bot/discord/status.py). Messages of jobs that ended before this count as shown.
ALTER TABLE jobs ADD COLUMN status_shown TEXT;
UPDATE jobs SET status_shown = state WHERE state IN ('delivered', 'rejected', 'failed', 'cancelled');
CREATE INDEX jobs_status_behind ON jobs (updated_at_ms)
    WHERE status_message_id IS NOT NULL AND status_shown IS NOT state
      AND state IN ('delivered', 'rejected', 'failed', 'cancelled');

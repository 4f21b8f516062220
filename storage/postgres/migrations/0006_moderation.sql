-- Approvals need the requester's roles as they were when asking (caps and draw rights depend on
-- them), and the approval message's channel.
-- PostgreSQL mirror of storage/migrations/0006_moderation.sql.

ALTER TABLE jobs ADD COLUMN role_ids_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN approval_channel_id BIGINT;
CREATE INDEX jobs_awaiting ON jobs (state, created_at_ms) WHERE state = 'awaiting_approval';

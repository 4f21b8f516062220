-- Jobs: one row per requested clip, its state machine, and an append-only event log.

CREATE TABLE job_states (
    state TEXT PRIMARY KEY,
    final INTEGER NOT NULL CHECK (final IN (0, 1))
);
INSERT INTO job_states (state, final) VALUES
    ('awaiting_approval', 0), ('queued', 0), ('submitted', 0), ('running', 0), ('succeeded', 0),
    ('delivered', 1), ('rejected', 1), ('failed', 1), ('cancelled', 1), ('expired', 0),
    ('delivery_failed', 0);

CREATE TABLE job_transitions (
    from_state TEXT NOT NULL REFERENCES job_states (state),
    to_state   TEXT NOT NULL REFERENCES job_states (state),
    PRIMARY KEY (from_state, to_state)
);
INSERT INTO job_transitions (from_state, to_state) VALUES
    ('awaiting_approval', 'queued'), ('awaiting_approval', 'rejected'), ('awaiting_approval', 'cancelled'),
    ('queued', 'submitted'), ('queued', 'rejected'), ('queued', 'failed'), ('queued', 'cancelled'),
    ('queued', 'expired'),
    ('submitted', 'running'), ('submitted', 'succeeded'), ('submitted', 'failed'),
    ('submitted', 'cancelled'), ('submitted', 'expired'), ('submitted', 'queued'),
    ('running', 'succeeded'), ('running', 'failed'), ('running', 'cancelled'), ('running', 'expired'),
    ('succeeded', 'delivered'), ('succeeded', 'delivery_failed'),
    ('delivery_failed', 'delivered'),
    ('expired', 'succeeded');

CREATE TABLE jobs (
    id                 TEXT    PRIMARY KEY,
    guild_id           INTEGER NOT NULL DEFAULT 0,
    channel_id         INTEGER NOT NULL DEFAULT 0,
    user_id            INTEGER NOT NULL DEFAULT 0,
    interaction_id     INTEGER,
    status_message_id  INTEGER,
    result_message_id  INTEGER,
    approval_message_id INTEGER,
    state              TEXT    NOT NULL REFERENCES job_states (state),
    provider           TEXT    NOT NULL,
    provider_job_id    TEXT,
    request_json       TEXT    NOT NULL,
    cost               INTEGER NOT NULL CHECK (cost >= 0),
    payer              TEXT    NOT NULL DEFAULT 'none' CHECK (payer IN ('none', 'member', 'pool')),
    hold_id            INTEGER REFERENCES transfers (id),
    webhook_token      TEXT    NOT NULL UNIQUE,
    media_token        TEXT    NOT NULL,
    progress_pct       INTEGER,
    provider_status    TEXT,
    error_kind         TEXT,
    error_message      TEXT,
    video_url          TEXT,
    media_path         TEXT,
    media_size_bytes   INTEGER,
    upload_limit_bytes INTEGER NOT NULL DEFAULT 10485760,
    submit_attempts    INTEGER NOT NULL DEFAULT 0,
    delivery_attempts  INTEGER NOT NULL DEFAULT 0,
    delivered_via      TEXT,
    parent_job_id      TEXT,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    submitted_at_ms    INTEGER,
    finished_at_ms     INTEGER,
    deadline_at_ms     INTEGER,
    next_poll_at_ms    INTEGER
);

CREATE INDEX jobs_by_state ON jobs (state, provider);
CREATE INDEX jobs_by_user ON jobs (guild_id, user_id, created_at_ms);
CREATE UNIQUE INDEX jobs_by_provider_job ON jobs (provider, provider_job_id)
    WHERE provider_job_id IS NOT NULL;

CREATE TRIGGER jobs_legal_transition BEFORE UPDATE OF state ON jobs
WHEN NEW.state <> OLD.state AND NOT EXISTS (
    SELECT 1 FROM job_transitions WHERE from_state = OLD.state AND to_state = NEW.state)
BEGIN
    SELECT RAISE(ABORT, 'illegal job transition');
END;

CREATE TABLE job_events (
    id         INTEGER PRIMARY KEY,
    job_id     TEXT    NOT NULL REFERENCES jobs (id),
    at_ms      INTEGER NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    detail     TEXT
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);

CREATE TRIGGER job_events_immutable BEFORE UPDATE ON job_events
BEGIN
    SELECT RAISE(ABORT, 'job events are immutable');
END;

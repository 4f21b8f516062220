-- What the Discord front end keeps: small named values, and requests awaiting the member's
-- confirmation (a Confirm button survives a restart because its draft lives here).
-- PostgreSQL mirror of storage/migrations/0005_frontend.sql.

CREATE TABLE bot_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE drafts (
    id             TEXT   PRIMARY KEY,
    guild_id       BIGINT NOT NULL,
    channel_id     BIGINT NOT NULL,
    user_id        BIGINT NOT NULL,
    interaction_id BIGINT NOT NULL,
    provider       TEXT   NOT NULL,
    request_json   TEXT   NOT NULL,
    cost           BIGINT NOT NULL,
    upload_limit_bytes BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    used_at_ms     BIGINT
);

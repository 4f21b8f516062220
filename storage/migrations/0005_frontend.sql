-- What the Discord front end keeps: small named values, and requests awaiting the member's
-- confirmation (a Confirm button survives a restart because its draft lives here).

CREATE TABLE bot_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE drafts (
    id             TEXT    PRIMARY KEY,
    guild_id       INTEGER NOT NULL,
    channel_id     INTEGER NOT NULL,
    user_id        INTEGER NOT NULL,
    interaction_id INTEGER NOT NULL,
    provider       TEXT    NOT NULL,
    request_json   TEXT    NOT NULL,
    cost           INTEGER NOT NULL,
    upload_limit_bytes INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    used_at_ms     INTEGER
);

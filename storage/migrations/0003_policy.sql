-- Per-guild pool policy and the moderation log.

CREATE TABLE guild_policies (
    guild_id             INTEGER PRIMARY KEY,
    member_cap_per_day   INTEGER CHECK (member_cap_per_day IS NULL OR member_cap_per_day >= 0),
    approval_threshold   INTEGER CHECK (approval_threshold IS NULL OR approval_threshold >= 0),
    confirm_threshold    INTEGER CHECK (confirm_threshold IS NULL OR confirm_threshold >= 0),
    approval_timeout_s   INTEGER NOT NULL DEFAULT 86400 CHECK (approval_timeout_s > 0),
    log_channel_id       INTEGER,
    moderator_role_id    INTEGER,
    updated_at_ms        INTEGER NOT NULL
);

-- Roles allowed to draw from the pool (no rows: every member may draw).
CREATE TABLE guild_draw_roles (
    guild_id INTEGER NOT NULL,
    role_id  INTEGER NOT NULL,
    PRIMARY KEY (guild_id, role_id)
);

-- Per-role daily caps that override the member cap (the most generous matching role wins).
CREATE TABLE guild_role_caps (
    guild_id    INTEGER NOT NULL,
    role_id     INTEGER NOT NULL,
    cap_per_day INTEGER NOT NULL CHECK (cap_per_day >= 0),
    PRIMARY KEY (guild_id, role_id)
);

CREATE TABLE guild_frozen_members (
    guild_id      INTEGER NOT NULL,
    user_id       INTEGER NOT NULL,
    actor_id      INTEGER NOT NULL,
    reason        TEXT,
    frozen_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE guild_blocklist (
    guild_id    INTEGER NOT NULL,
    pattern     TEXT    NOT NULL,
    is_regex    INTEGER NOT NULL CHECK (is_regex IN (0, 1)),
    actor_id    INTEGER NOT NULL,
    added_at_ms INTEGER NOT NULL,
    PRIMARY KEY (guild_id, pattern, is_regex)
);

-- Channels where /video is allowed (no rows: every channel).
CREATE TABLE guild_allowed_channels (
    guild_id   INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
);

CREATE TABLE moderation_events (
    id        INTEGER PRIMARY KEY,
    guild_id  INTEGER NOT NULL,
    actor_id  INTEGER NOT NULL,
    action    TEXT    NOT NULL,
    target_id INTEGER,
    detail    TEXT,
    reason    TEXT,
    at_ms     INTEGER NOT NULL
);
CREATE INDEX moderation_events_by_guild ON moderation_events (guild_id, at_ms);

CREATE TRIGGER moderation_events_immutable BEFORE UPDATE ON moderation_events
BEGIN
    SELECT RAISE(ABORT, 'moderation events are immutable');
END;
CREATE TRIGGER moderation_events_no_delete BEFORE DELETE ON moderation_events
BEGIN
    SELECT RAISE(ABORT, 'moderation events are immutable');
END;

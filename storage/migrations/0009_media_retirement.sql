-- A clip's /media link can be retired (its Discord message was deleted): from then on the link
-- answers 404, whatever the token. NULL: the link works while the clip is kept.

ALTER TABLE jobs ADD COLUMN media_retired_at_ms INTEGER;

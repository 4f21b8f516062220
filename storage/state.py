"""Small named values (e.g. the hash of the last synced command set) and confirmation drafts."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from storage.database import Database


@dataclass(frozen=True)
class Draft:
    """A priced request waiting for its member's Confirm click."""

    id: str
    guild_id: int
    channel_id: int
    user_id: int
    interaction_id: int
    provider: str
    request: dict[str, Any]
    cost: int
    upload_limit_bytes: int
    created_at_ms: int
    used_at_ms: int | None


class BotState:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        row = await self._db.fetchone("SELECT value FROM bot_state WHERE key = ?", (key,))
        return str(row["value"]) if row else None

    async def set(self, key: str, value: str) -> None:
        await self._db.write_statement(
            "INSERT INTO bot_state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def add_draft(
        self,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        interaction_id: int,
        provider: str,
        request: dict[str, Any],
        cost: int,
        upload_limit_bytes: int,
    ) -> Draft:
        draft_id = secrets.token_hex(6)
        now = self._db.clock.now_ms()
        await self._db.write_statement(
            "INSERT INTO drafts (id, guild_id, channel_id, user_id, interaction_id, provider,"
            " request_json, cost, upload_limit_bytes, created_at_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                draft_id,
                guild_id,
                channel_id,
                user_id,
                interaction_id,
                provider,
                json.dumps(request, sort_keys=True),
                cost,
                upload_limit_bytes,
                now,
            ),
        )
        return Draft(
            draft_id,
            guild_id,
            channel_id,
            user_id,
            interaction_id,
            provider,
            request,
            cost,
            upload_limit_bytes,
            now,
            None,
        )

    async def take_draft(self, draft_id: str) -> Draft | None:
        """Mark a draft used and return it; None if unknown or already used (one click wins)."""
        rows = await self._db.write_statement(
            "UPDATE drafts SET used_at_ms = ? WHERE id = ? AND used_at_ms IS NULL RETURNING *",
            (self._db.clock.now_ms(), draft_id),
        )
        if not rows:
            return None
        r = rows[0]
        return Draft(
            r["id"],
            r["guild_id"],
            r["channel_id"],
            r["user_id"],
            r["interaction_id"],
            r["provider"],
            json.loads(r["request_json"]),
            r["cost"],
            r["upload_limit_bytes"],
            r["created_at_ms"],
            r["used_at_ms"],
        )

    async def find_draft(self, draft_id: str) -> Draft | None:
        r = await self._db.fetchone("SELECT * FROM drafts WHERE id = ?", (draft_id,))
        if r is None:
            return None
        return Draft(
            r["id"],
            r["guild_id"],
            r["channel_id"],
            r["user_id"],
            r["interaction_id"],
            r["provider"],
            json.loads(r["request_json"]),
            r["cost"],
            r["upload_limit_bytes"],
            r["created_at_ms"],
            r["used_at_ms"],
        )

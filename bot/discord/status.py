"""Keeps each job's status message in its channel up to date, with the bot token.

At most one edit per job every `interval_s` (the latest state wins; final states are shown at
once). The interaction token is never used, so edits keep working after 15 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import discord

from bot.discord.buttons import status_view
from bot.discord.render import status_embed
from storage import Job, JobState

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

log = logging.getLogger(__name__)

URGENT_EVENTS = frozenset(
    {"succeeded", "delivered", "failed", "cancelled", "expired", "rejected", "delivery_failed"}
)


class StatusMessages:
    def __init__(self, bot: KlingBot, interval_s: float) -> None:
        self.bot = bot
        self.interval_s = interval_s
        self._last_edit: dict[str, float] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self.edits = 0

    async def job_changed(self, job: Job, event: str) -> None:
        if job.id in self._timers:
            return  # an edit is already scheduled; it will read the latest state
        loop = asyncio.get_running_loop()
        wait_s = 0.0
        if event not in URGENT_EVENTS:
            wait_s = max(0.0, self._last_edit.get(job.id, 0.0) + self.interval_s - loop.time())
        self._timers[job.id] = loop.create_task(self._edit_later(job.id, wait_s))

    async def _edit_later(self, job_id: str, wait_s: float) -> None:
        try:
            if wait_s:
                await asyncio.sleep(wait_s)
        finally:
            self._timers.pop(job_id, None)
        await self.refresh(job_id)

    async def refresh(self, job_id: str) -> None:
        """Edit the job's status message to show its current state."""
        job = await self.bot.service.jobs.find(job_id)
        if job is None or not job.status_message_id:
            return
        self._last_edit[job_id] = asyncio.get_running_loop().time()
        position, eta_ms = await self.bot.service.position_and_eta(job)
        embed = status_embed(
            job, now_ms=self.bot.service.clock.now_ms(), position=position, eta_ms=eta_ms
        )
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id or None)
        message = channel.get_partial_message(job.status_message_id)
        try:
            await message.edit(embed=embed, view=status_view(job))
            self.edits += 1
        except discord.NotFound:
            await self.bot.service.jobs.update(job.id, status_message_id=None)  # deleted: stop
        except discord.HTTPException as error:
            log.info("status message of %s not updated: %s", job.id, error)
        if job.is_final or job.state is JobState.EXPIRED:
            self._last_edit.pop(job_id, None)
        if job.approval_message_id and job.state is JobState.REJECTED:
            await self._close_approval(job)

    async def _close_approval(self, job: Job) -> None:
        """Take the buttons off an approval request that was declined or lapsed."""
        channel_id = job.approval_channel_id or job.channel_id
        channel = self.bot.get_partial_messageable(channel_id, guild_id=job.guild_id or None)
        try:
            await channel.get_partial_message(job.approval_message_id or 0).edit(
                content=f"⛔ Not approved: {job.error_message or 'declined'}", view=None
            )
        except discord.HTTPException as error:
            log.info("approval message of %s not updated: %s", job.id, error)

    async def close(self) -> None:
        for task in list(self._timers.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

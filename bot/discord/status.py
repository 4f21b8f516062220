"""Keeps each job's status message in its channel up to date, with the bot token.

Edits go through the channel's pacer (bot/discord/pacing.py): a waiting edit is replaced by a
newer one and reads the job when it is sent, so the latest state wins and no edit is wasted on a
state already left; final states go first. With several processes, the one that posted the
message and the one working the job may both edit it; each looks at the job again after its edit
and edits once more if the job moved on, so an older render never has the last word. Besides the channel's limits, a job is edited at most
once every `interval_s` while it runs. The interaction token is never used, so edits keep working
after 15 minutes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord

from bot.discord.buttons import status_view
from bot.discord.pacing import Pacer
from bot.discord.rate_limits import Priority
from bot.discord.render import status_embed
from bot.pipeline.backoff import full_jitter_s
from storage import Job, JobState

if TYPE_CHECKING:
    from bot.discord.client import KlingBot

log = logging.getLogger(__name__)

# Shown without waiting for the job's edit interval; all but "succeeded" are final (or, for
# delivery_failed, will stay a while) and go ahead of progress in the channel.
URGENT_EVENTS = frozenset(
    {"succeeded", "delivered", "failed", "cancelled", "expired", "rejected", "delivery_failed"}
)
FINAL_EVENTS = URGENT_EVENTS - {"succeeded"}


# Discord was busy or failed: the edit of a state is sent again, a few times, 1 s, 2 s, 4 s...
# apart.
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRIES = 6
RETRY_MAX_DELAY_S = 60.0
# Final jobs whose message is not known to show it are edited by any process, once the last
# change is this old (its own process had time to edit), looked for this often.
REPAIR_GRACE_S = 15.0
REPAIR_INTERVAL_S = 15.0


class StatusMessages:
    def __init__(self, bot: KlingBot, pacer: Pacer, interval_s: float) -> None:
        self.bot = bot
        self.pacer = pacer
        self.interval_s = interval_s
        self._last_edit: dict[str, float] = {}
        self._failures: dict[str, tuple[JobState, int]] = {}  # per job: state, failed edits
        self._fitting: set[str] = set()  # jobs whose clip is being re-encoded for the channel
        self.edits = 0

    async def show_fitting(self, job: Job) -> None:
        """The clip is being re-encoded to fit the channel: say so until it is posted."""
        self._fitting.add(job.id)
        self.schedule(job, final=False)

    async def job_changed(self, job: Job, event: str) -> None:
        self.schedule(job, urgent=event in URGENT_EVENTS, final=event in FINAL_EVENTS)
        if job.approval_message_id and job.state is JobState.REJECTED:
            self.pacer.update(
                job.approval_channel_id or job.channel_id,
                ("approval", job.id),
                lambda: self._close_approval(job),
                priority=Priority.FINAL,
            )

    def schedule(
        self, job: Job, *, urgent: bool = True, final: bool = True, delay_s: float = 0.0
    ) -> None:
        """Edit the job's status message to show the state it is in when the edit is sent:
        `urgent`, without waiting for the job's edit interval; `final`, ahead of progress."""
        if not urgent:
            last = self._last_edit.get(job.id)
            if last is not None:
                next_s = last + self.interval_s - asyncio.get_running_loop().time()
                delay_s = max(delay_s, next_s)
        self.pacer.update(
            job.channel_id,
            job.id,
            lambda: self.refresh(job.id),
            priority=Priority.FINAL if final else Priority.PROGRESS,
            delay_s=delay_s,
        )

    async def refresh(self, job_id: str) -> None:
        """Edit the job's status message to show its current state (call it through the pacer)."""
        job = await self.bot.service.jobs.find(job_id)
        if job is None or not job.status_message_id:
            return
        position, eta_ms = await self.bot.service.position_and_eta(job)
        if job.state not in (JobState.SUCCEEDED, JobState.DELIVERY_FAILED):
            self._fitting.discard(job.id)
        embed = status_embed(
            job,
            now_ms=self.bot.service.clock.now_ms(),
            position=position,
            eta_ms=eta_ms,
            fitting=job.id in self._fitting,
        )
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id or None)
        message = channel.get_partial_message(job.status_message_id)
        self._last_edit[job_id] = asyncio.get_running_loop().time()
        try:
            await message.edit(embed=embed, view=status_view(job))
            self.edits += 1
        except discord.NotFound:
            await self.bot.service.jobs.update(job.id, status_message_id=None)  # deleted: stop
        except discord.HTTPException as error:
            self._failed(job, error)
            return
        self._failures.pop(job_id, None)
        # Another process working the job may have edited this message meanwhile, and ours,
        # rendered before its change, may have landed after its edit: look again, and show the
        # state the job is in now if it moved on (the last edit sent always follows a look).
        now = await self.bot.service.jobs.find(job_id)
        if now is not None and (now.state, now.progress_pct) != (job.state, job.progress_pct):
            self.schedule(now, final=now.is_final)
            return
        if job.is_final and job.status_shown != job.state.value:
            await self.bot.service.jobs.update(job.id, status_shown=job.state.value)
        if job.is_final or job.state is JobState.EXPIRED:
            self._last_edit.pop(job_id, None)

    async def repair_behind(self) -> int:
        """Edit the status messages of final jobs that do not show it yet: the process that
        made the last change died before its edit, or the edit was another process's to make.
        Returns how many were scheduled."""
        now_ms = self.bot.service.clock.now_ms()
        behind = await self.bot.service.jobs.status_behind(now_ms - int(REPAIR_GRACE_S * 1000))
        for job in behind:
            self.schedule(job, final=True)
        return len(behind)

    async def repair_forever(self) -> None:
        """`repair_behind` now and then, for as long as the bot runs."""
        while True:
            try:
                count = await self.repair_behind()
                if count:
                    log.info("editing %d status messages left behind their jobs", count)
            except Exception:
                log.exception("status message repair failed; trying again later")
            await asyncio.sleep(REPAIR_INTERVAL_S)

    def _failed(self, job: Job, error: discord.HTTPException) -> None:
        """Try again later when Discord failed or was busy, so the message does not stay behind."""
        state, failures = self._failures.get(job.id, (job.state, 0))
        failures = failures + 1 if state is job.state else 1  # each state gets its tries
        if error.status in RETRIED_STATUSES and failures <= MAX_RETRIES:
            self._failures[job.id] = (job.state, failures)
            delay_s = full_jitter_s(failures - 1, base_s=1.0, cap_s=RETRY_MAX_DELAY_S)
            log.info(
                "status message of %s not updated (%s); again in %.0fs", job.id, error, delay_s
            )
            self.schedule(job, final=job.is_final, delay_s=delay_s)
            return
        self._failures.pop(job.id, None)
        self._last_edit.pop(job.id, None)
        log.warning("status message of %s not updated: %s", job.id, error)

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

"""The sweeper: once a minute, what no event will ever trigger.

Holds with no live job behind them past the deadline expire; queued jobs past their deadline
expire; approval requests nobody answered lapse; media past retention and old webhook delivery
rows of finished jobs are removed. A job's images are kept while it may still be sent (again) or
fetched by the vendor: until it has a result or ends.
"""

from __future__ import annotations

import asyncio
import logging

from bot.pipeline.approvals import Approvals
from bot.pipeline.config import SWEEP_INTERVAL_S, WEBHOOK_DELIVERY_KEEP_S, PipelineConfig
from bot.pipeline.dispatcher import Dispatcher
from bot.pipeline.media_store import MediaStore, image_hashes
from bot.pipeline.settlement import Settlement
from storage import Clock, JobState, JobStore, Ledger

log = logging.getLogger(__name__)

S = JobState
IMAGES_IN_USE = frozenset({S.AWAITING_APPROVAL, S.QUEUED, S.SUBMITTED, S.RUNNING})


class Sweeper:
    def __init__(
        self,
        *,
        jobs: JobStore,
        ledger: Ledger,
        clock: Clock,
        media: MediaStore,
        config: PipelineConfig,
        settlement: Settlement,
        approvals: Approvals,
        dispatcher: Dispatcher,
    ) -> None:
        self._jobs = jobs
        self._ledger = ledger
        self._clock = clock
        self._media = media
        self._config = config
        self._settlement = settlement
        self._approvals = approvals
        self._dispatcher = dispatcher

    async def run(self) -> None:
        """The sweeper loop (a task of the facade)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")

    async def sweep(self) -> None:
        now = self._clock.now_ms()
        cutoff = now - (self._config.deadline_s + 600) * 1000
        for hold in await self._ledger.open_holds_before(cutoff):
            job = await self._jobs.find(hold.job_id) if hold.job_id else None
            if job is None or job.is_final or job.state is JobState.EXPIRED:
                await self._settlement.expire_orphan_hold(hold.id, hold.job_id)
        in_flight = self._dispatcher.in_flight()
        for job in await self._jobs.in_states(frozenset({JobState.QUEUED})):
            if (
                job.deadline_at_ms is not None
                and now >= job.deadline_at_ms
                and job.id not in in_flight
            ):
                await self._settlement.expire_queued(job)
        await self._approvals.lapse()
        keep = await self._jobs.unfinished_ids()
        keep_images = image_hashes(await self._jobs.in_states(IMAGES_IN_USE))
        removed = await asyncio.to_thread(self._media.prune, keep, keep_images)
        if removed:
            log.info("media retention removed %d files", len(removed))
        await self._jobs.prune_webhook_deliveries(now - WEBHOOK_DELIVERY_KEEP_S * 1000)

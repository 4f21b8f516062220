"""Tracker: follows every job the provider holds until it has an outcome.

One scheduler (bot.pipeline.scheduler) calls `tick(job_id)` when a job is due; a job whose
lease another process holds is left to it (bot.pipeline.leases, which also schedules the jobs this
process resumes at start or takes over):
    submitted/running  poll the provider's status endpoint (the truth; webhooks only make a poll
                       happen sooner), interval growing with the job's age, per-provider poll
                       rate; past the deadline the job expires and its holds are released;
                       with no vendor job id (its create's answer was lost), Recoveries
    succeeded / delivery_failed   hand the job to Completion (a restart or a retry)
    expired            look now and then for a late success, until the grace period ends
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from bot.pipeline.backoff import full_jitter_s
from bot.pipeline.completion import Completion
from bot.pipeline.config import DEFAULT_POLLS_PER_MIN, LATE_POLL_INTERVAL_S, PipelineConfig
from bot.pipeline.events import EventBus, JobEvent
from bot.pipeline.leases import LeaseKeeper
from bot.pipeline.metrics import Metrics
from bot.pipeline.recovery import Recoveries
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.settlement import Settlement
from bot.pipeline.token_bucket import RateLimiter
from bot.pipeline.vendors import Vendors
from bot.providers import (
    ErrorKind,
    ProviderError,
    ProviderJob,
    ProviderState,
    ProviderStatus,
    VideoProvider,
)
from storage import Clock, IllegalTransition, Job, JobState, JobStore

log = logging.getLogger(__name__)

S = JobState
POLL_BURST_S = 60.0
LIVE = frozenset({S.SUBMITTED, S.RUNNING})


class Tracker:
    def __init__(
        self,
        *,
        jobs: JobStore,
        clock: Clock,
        vendors: Vendors,
        config: PipelineConfig,
        scheduler: Scheduler,
        settlement: Settlement,
        completion: Completion,
        recoveries: Recoveries,
        events: EventBus,
        metrics: Metrics,
        leases: LeaseKeeper,
    ) -> None:
        self._leases = leases
        self._jobs = jobs
        self._clock = clock
        self._vendors = vendors
        self._config = config
        self._scheduler = scheduler
        self._settlement = settlement
        self._completion = completion
        self._recoveries = recoveries
        self._events = events
        self._metrics = metrics
        self._poll_limits = {
            # a vendor counts status checks per minute: a minute's worth may go at once (after
            # a restart every live job is checked), unlike creates, which are smoothed
            name: RateLimiter(
                config.polls_per_min.get(name, DEFAULT_POLLS_PER_MIN), burst_s=POLL_BURST_S
            )
            for name in vendors
        }

    async def tick(self, job_id: str) -> None:
        """The scheduler's callback: move one job along according to its state."""
        try:
            await self._advance(job_id)
        except Exception:
            delay_s = full_jitter_s(0, base_s=30.0, cap_s=30.0)
            log.exception("job %s: unexpected error; trying again in %.0fs", job_id, delay_s)
            self._scheduler.schedule(job_id, self._clock.now_ms() + int(delay_s * 1000))

    async def _advance(self, job_id: str) -> None:
        job = await self._jobs.find(job_id)
        if job is None or not await self._leases.working(job):
            return  # gone, or another process works on it now
        if job.state in LIVE:
            await self._poll(job)
        elif job.state in (S.SUCCEEDED, S.DELIVERY_FAILED):
            self._completion.complete(job)
        elif job.state is S.EXPIRED:
            await self._poll_late(job)

    def _interval_s(self, job: Job) -> float:
        """Poll interval: starts at poll_initial_s and grows with the job's age."""
        age_s = max(0.0, (self._clock.now_ms() - (job.submitted_at_ms or job.created_at_ms)) / 1000)
        return min(self._config.poll_max_s, self._config.poll_initial_s * (1 + age_s / 60))

    async def _poll(self, job: Job) -> None:
        now = self._clock.now_ms()
        if job.deadline_at_ms is not None and now >= job.deadline_at_ms:
            await self._expire(job)
            return
        if not job.provider_job_id:
            await self._recoveries.reconcile(job)
            return
        provider = self._vendors.get(job.provider)
        if provider is None:
            self._scheduler.schedule(job.id, now + 60_000)
            return
        status = await self._ask(provider, job)
        if status is None:
            return
        await self.apply(job, status)

    async def _ask(self, provider: VideoProvider, job: Job) -> ProviderStatus | None:
        """Poll the provider; on failure reschedule (honouring retry-after) and return None."""
        assert job.provider_job_id is not None
        started = time.perf_counter()
        try:
            await self._poll_limits[job.provider].acquire()
            status = await provider.poll(ProviderJob(job.provider_job_id, job.provider_data))
        except ProviderError as error:
            self._metrics.observe_call(job.provider, "poll", started, error)
            wait_s = error.retry_after_s or self._interval_s(job)
            self._scheduler.schedule(job.id, self._clock.now_ms() + int(wait_s * 1000))
            log.info("poll of %s failed (%s): %s", job.id, error.kind.value, error.detail)
            return None
        self._metrics.observe_call(job.provider, "poll", started)
        return status

    async def apply(self, job: Job, status: ProviderStatus) -> None:
        """Record what the provider said and move the job accordingly."""
        if status.state in (ProviderState.QUEUED, ProviderState.RUNNING):
            changes: dict[str, Any] = {}
            if status.progress_pct is not None and status.progress_pct != job.progress_pct:
                changes["progress_pct"] = status.progress_pct
            if status.vendor_status and status.vendor_status != job.provider_status:
                changes["provider_status"] = status.vendor_status
            if status.state is ProviderState.RUNNING and job.state is S.SUBMITTED:
                job = await self._jobs.transition(job.id, S.RUNNING, from_states=LIVE, **changes)
                self._events.publish(job, JobEvent.RUNNING)
            elif changes:
                job = await self._jobs.update(job.id, **changes)
                self._events.publish(job, JobEvent.PROGRESS)
            self._scheduler.schedule(
                job.id, self._clock.now_ms() + int(self._interval_s(job) * 1000)
            )
        elif status.state is ProviderState.SUCCEEDED:
            try:
                job = await self._jobs.transition(
                    job.id,
                    S.SUCCEEDED,
                    from_states=LIVE | {S.EXPIRED},
                    video_url=status.video_url,
                    progress_pct=100,
                    provider_status=status.vendor_status,
                    finished_at_ms=self._clock.now_ms(),
                )
            except IllegalTransition:
                return  # someone else recorded the outcome (webhook and poll racing)
            if job.submitted_at_ms:
                self._metrics.job_seconds.labels(job.provider).observe(
                    (job.finished_at_ms or 0) / 1000 - job.submitted_at_ms / 1000
                )
            self._events.publish(job, JobEvent.SUCCEEDED)  # a slot at the provider is free
            self._completion.complete(job)
        elif status.state is ProviderState.FAILED:
            error = status.error or ProviderError(
                ErrorKind.UNKNOWN, "the job failed", provider=job.provider
            )
            await self._settlement.fail(job, error, vendor_status=status.vendor_status)
        else:
            with contextlib.suppress(IllegalTransition):
                job = await self._settlement.settle(
                    job, S.CANCELLED, LIVE, void_reason="cancelled at the provider"
                )

    async def _expire(self, job: Job) -> None:
        try:
            job = await self._settlement.settle(
                job,
                S.EXPIRED,
                LIVE | {S.QUEUED},
                expire=True,
                error_kind="deadline",
                error_message="The video provider did not finish in time; your credits were returned.",
            )
        except IllegalTransition:
            return
        provider = self._vendors.get(job.provider)
        if job.provider_job_id and provider is not None and provider.capabilities.cancel:
            with contextlib.suppress(ProviderError):
                await provider.cancel(ProviderJob(job.provider_job_id, job.provider_data))
        if job.provider_job_id and self._config.late_grace_s > 0:
            self._scheduler.schedule(
                job.id, self._clock.now_ms() + int(LATE_POLL_INTERVAL_S * 1000)
            )

    async def _poll_late(self, job: Job) -> None:
        """An expired job may still finish: look now and then, until the grace period ends."""
        ended_ms = (job.finished_at_ms or job.updated_at_ms) + self._config.late_grace_s * 1000
        if not job.provider_job_id or self._clock.now_ms() > ended_ms:
            return
        provider = self._vendors.get(job.provider)
        if provider is None:
            return
        status = await self._ask(provider, job)
        if status is None:
            return
        if status.state is ProviderState.SUCCEEDED:
            log.info("job %s finished after its deadline; delivering it", job.id)
            await self.apply(job, status)
        elif not status.state.is_terminal:
            self._scheduler.schedule(
                job.id, self._clock.now_ms() + int(LATE_POLL_INTERVAL_S * 1000)
            )

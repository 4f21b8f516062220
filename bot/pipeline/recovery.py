"""Recovery: a create whose outcome is unknown is settled at once, not at the deadline.

A create's outcome is unknown when the process died between marking the job submitted and
saving the vendor's job id, or when the connection broke after the request was sent. The
tracker hands such a job (live, without a vendor job id) here, according to what the provider
can do (`VideoProvider.recovery`):

    resubmit   the same create again: the provider makes no second job for the same client
               reference (the `local` provider), so this adopts the job or makes it now
    lookup     ask the vendor for the job made with the bot's job id (Kling's external_task_id):
               found -> adopted and tracked; not made -> queued again for a fresh create
    none       nothing can tell: the member's status message says so and when the credits come
               back (the deadline); the mod log hears it once; a webhook still adopts the job
"""

from __future__ import annotations

import logging

from bot.pipeline.backoff import full_jitter_s
from bot.pipeline.creates import Creates
from bot.pipeline.events import EventBus, JobEvent
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.vendors import Vendors
from bot.providers import ProviderError, Recovery, Submission
from bot.request import VideoRequest
from storage import Clock, IllegalTransition, Job, JobState, JobStore

log = logging.getLogger(__name__)

OUTCOME_UNKNOWN = "outcome_unknown"


class Recoveries:
    def __init__(
        self,
        *,
        jobs: JobStore,
        clock: Clock,
        vendors: Vendors,
        creates: Creates,
        scheduler: Scheduler,
        events: EventBus,
    ) -> None:
        self._jobs = jobs
        self._clock = clock
        self._vendors = vendors
        self._creates = creates
        self._scheduler = scheduler
        self._events = events
        self._attempts: dict[str, int] = {}

    async def reconcile(self, job: Job) -> None:
        """Find out what became of `job`'s create (a live job with no vendor job id)."""
        provider = self._vendors.get(job.provider)
        now = self._clock.now_ms()
        if provider is None:
            self._scheduler.schedule(job.id, now + 60_000)
            return
        try:
            if provider.recovery is Recovery.RESUBMIT:
                await self._adopt(job, await self._creates.send(provider, job))
            elif provider.recovery is Recovery.LOOKUP:
                found = await provider.find(job.id, VideoRequest.model_validate(job.request))
                if found is None:
                    await self._create_again(job)
                else:
                    await self._adopt(job, found)
            else:
                await self._unknown(job)
        except ProviderError as error:
            attempt = self._attempts.get(job.id, 0) + 1
            self._attempts[job.id] = attempt
            wait_s = error.retry_after_s or full_jitter_s(attempt - 1, base_s=5.0, cap_s=300.0)
            log.info("recovery of %s failed (%s); again in %.0f s", job.id, error.kind, wait_s)
            self._scheduler.schedule(job.id, now + int(wait_s * 1000))
            return
        self._attempts.pop(job.id, None)

    async def _adopt(self, job: Job, submission: Submission) -> None:
        log.info("job %s: its create is %s at %s", job.id, submission.job.id, job.provider)
        await self._jobs.update(
            job.id,
            provider_job_id=submission.job.id,
            provider_data=dict(submission.job.data),
            provider_status=submission.status.vendor_status,
        )
        self._scheduler.poke(job.id)  # the tracker polls it and applies what it finds

    async def _create_again(self, job: Job) -> None:
        """The vendor made nothing: the job goes back to the queue for a fresh create."""
        try:
            queued = await self._jobs.transition(
                job.id,
                JobState.QUEUED,
                from_states=frozenset({JobState.SUBMITTED}),
                next_poll_at_ms=None,
                detail="the create never reached the provider; queued again",
            )
        except IllegalTransition:
            return
        log.info("job %s: the provider never made it; queued again", job.id)
        self._events.publish(queued, JobEvent.QUEUED)

    async def _unknown(self, job: Job) -> None:
        """Nothing can tell: say so once, and wait for a webhook or the deadline."""
        deadline_ms = job.deadline_at_ms or self._clock.now_ms()
        if job.error_kind != OUTCOME_UNKNOWN:
            credits = f"your {job.cost} credits come back" if job.hold_id else "it ends"
            told = await self._jobs.update(
                job.id,
                error_kind=OUTCOME_UNKNOWN,
                error_message=(
                    f"The video provider ({job.provider}) may or may not have received this"
                    " request: its answer was lost. If it did, the clip still comes here;"
                    f" if not, {credits} <t:{deadline_ms // 1000}:R>."
                ),
            )
            self._events.publish(told, JobEvent.OUTCOME_UNKNOWN)
        self._scheduler.schedule(job.id, deadline_ms)

"""Settlement: the only code that resolves a job's holds after intake.

    failure / cancel / refusal  -> the job's holds are voided, with the state change, in one transaction
    deadline                    -> the holds expire (same transaction)
    success                     -> capture: the hold is posted (at most what was held; the rest
                                   released), a failover top-up after it; a success that arrives
                                   after expiry is charged only if the balance still covers it
    orphan hold (sweeper)       -> expired

Every resolution is idempotent (a hold resolves once; a replay is ignored), so a restart, a
webhook racing a poll, or two stages reaching the same job never charge or refund twice.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from bot.pipeline.events import EventBus, JobEvent
from bot.pipeline.metrics import Metrics
from bot.pipeline.scheduler import Scheduler
from bot.providers import ProviderError
from storage import (
    AccountRef,
    Database,
    HoldAlreadyResolved,
    IllegalTransition,
    InsufficientCredits,
    Job,
    JobState,
    JobStore,
    Ledger,
    Tx,
)
from storage.ledger import SPEND, TransferKind

log = logging.getLogger(__name__)

S = JobState
FAILABLE = frozenset({S.QUEUED, S.SUBMITTED, S.RUNNING, S.SUCCEEDED})


def payer_account(job: Job) -> AccountRef:
    """The account a job's credits come from."""
    if job.payer == "pool":
        return AccountRef.pool(job.guild_id)
    return AccountRef.member(job.guild_id, job.user_id)


class Settlement:
    def __init__(
        self,
        *,
        db: Database,
        jobs: JobStore,
        ledger: Ledger,
        events: EventBus,
        scheduler: Scheduler,
        metrics: Metrics,
    ) -> None:
        self._db = db
        self._clock = db.clock
        self._jobs = jobs
        self._ledger = ledger
        self._events = events
        self._scheduler = scheduler
        self._metrics = metrics

    async def settle(
        self,
        job: Job,
        to_state: JobState,
        from_states: frozenset[JobState],
        *,
        void_reason: str | None = None,
        expire: bool = False,
        detail: str | None = None,
        held_by: str | None = None,
        **changes: Any,
    ) -> Job:
        """Move a job to a failure-like state and release its holds, in one transaction.

        IllegalTransition if the job is no longer in one of `from_states`; with `held_by`,
        LeaseLost if that process does not hold the job's lease.
        """

        async def run(tx: Tx) -> Job:
            moved = await self._jobs.transition(
                job.id,
                to_state,
                from_states=from_states,
                finished_at_ms=self._clock.now_ms(),
                detail=detail,
                held_by=held_by,
                tx=tx,
                **changes,
            )
            for hold_id in (moved.hold_id, moved.topup_hold_id):
                if hold_id is None:
                    continue
                with contextlib.suppress(HoldAlreadyResolved):
                    if expire:
                        await self._ledger.expire(hold_id, tx=tx)
                    else:
                        await self._ledger.void(hold_id, reason=void_reason or "void", tx=tx)
            return moved

        settled = await self._db.write(run)
        self._events.publish(settled, JobEvent(to_state.value))
        return settled

    async def fail(
        self,
        job: Job,
        error: ProviderError,
        *,
        vendor_status: str | None = None,
        note: str | None = None,
        held_by: str | None = None,
    ) -> None:
        """The job failed for good: void its holds and stop tracking it. `note` is added to
        what the member reads (for example why it did not move to another provider); with
        `held_by`, only by the holder of the job's lease (LeaseLost otherwise)."""
        extra: dict[str, Any] = {"provider_status": vendor_status} if vendor_status else {}
        try:
            await self.settle(
                job,
                S.FAILED,
                FAILABLE,
                void_reason=error.kind.value,
                held_by=held_by,
                **extra,
                error_kind=error.kind.value,
                error_message=(f"{error} {note}" if note else str(error))[:1000],
                detail=error.detail[:500],
            )
        except IllegalTransition:
            return
        self._metrics.provider_errors.labels(job.provider, error.kind.value).inc()
        self._scheduler.discard(job.id)
        log.info("job %s failed: %r", job.id, error)

    async def expire_queued(self, job: Job) -> None:
        """A queued job reached its deadline before it was sent: expire it (no-op if it moved)."""
        with contextlib.suppress(IllegalTransition):
            await self.settle(job, S.EXPIRED, frozenset({S.QUEUED}), expire=True)

    async def expire_orphan_hold(self, hold_id: int, job_id: str | None) -> None:
        """A hold with no live job behind it, past its deadline."""
        with contextlib.suppress(HoldAlreadyResolved):
            await self._ledger.expire(hold_id)
            log.warning("expired orphan hold %d (job %s)", hold_id, job_id)

    async def capture(self, job: Job, *, held_by: str | None = None) -> Job:
        """Charge for a finished clip once; a late success is charged only if the balance covers
        it. With `held_by`, only by the holder of the job's lease, checked in the charge's own
        transaction (LeaseLost otherwise, nothing charged)."""
        if job.hold_id is None or job.payer == "none":
            return job
        hold, resolution = await self._ledger.hold(job.hold_id)
        if resolution is None or resolution.kind is TransferKind.POST:

            async def run(tx: Tx) -> Job:
                post = await self._ledger.capture(hold.id, min(job.cost, hold.amount), tx=tx)
                charged = post.amount
                if job.topup_hold_id is not None:  # a failover to a pricier provider
                    topup, _ = await self._ledger.hold(job.topup_hold_id, tx=tx)
                    extra = max(0, min(job.cost - charged, topup.amount))
                    charged += (await self._ledger.capture(topup.id, extra, tx=tx)).amount
                return await self._jobs.update(job.id, charged=charged, held_by=held_by, tx=tx)

            return await self._db.write(run)
        if job.charged:
            return job

        async def late(tx: Tx) -> Job:
            await self._ledger.transfer(
                key=f"late:{job.id}",
                debit=payer_account(job),
                credit=SPEND,
                amount=job.cost,
                reason="late_capture",
                user_id=job.user_id,
                job_id=job.id,
                tx=tx,
            )
            return await self._jobs.update(job.id, charged=job.cost, held_by=held_by, tx=tx)

        try:
            charged = await self._db.write(late)
        except InsufficientCredits:
            log.warning("job %s finished late; delivered without charge (balance too low)", job.id)
            return job
        log.info("job %s finished late; charged %d credits", job.id, job.cost)
        return charged

"""Intake: a request becomes a queued job, or a specific refusal with nothing charged.

quote    validate the request against the provider's capabilities and price it
submit   server rules (PolicyGate) -> member limits -> payer -> [hold + job row, one
         transaction] -> queued (or awaiting approval, nothing held, above the threshold)
cancel   the requester or a moderator; the holds are voided (Settlement)
place    a queued job's place in line, a running job's expected finish
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bot.errors import InvalidRequest, NotFound, NotPermitted, PolicyRefusal, UserError
from bot.pipeline.config import DEFAULT_RUN_MS, PipelineConfig
from bot.pipeline.events import EventBus, JobEvent
from bot.pipeline.models import Actor, Quote, Receipt, Requester
from bot.pipeline.policy import PolicyGate
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.settlement import Settlement
from bot.pipeline.vendors import Vendors
from bot.pricing import PriceTable
from bot.providers import ProviderError, ProviderJob
from bot.request import VideoRequest, parse_request
from storage import (
    Clock,
    Database,
    IllegalTransition,
    Job,
    JobState,
    JobStore,
    Ledger,
    NewJob,
    PolicySnapshot,
    Tx,
)

log = logging.getLogger(__name__)

S = JobState
LIVE = frozenset({S.SUBMITTED, S.RUNNING})
CANCELLABLE = frozenset({S.AWAITING_APPROVAL, S.QUEUED, S.SUBMITTED, S.RUNNING})


class Intake:
    def __init__(
        self,
        *,
        db: Database,
        jobs: JobStore,
        ledger: Ledger,
        gate: PolicyGate,
        clock: Clock,
        vendors: Vendors,
        pricing: PriceTable,
        config: PipelineConfig,
        scheduler: Scheduler,
        settlement: Settlement,
        events: EventBus,
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._ledger = ledger
        self._gate = gate
        self._clock = clock
        self._vendors = vendors
        self._pricing = pricing
        self._config = config
        self._scheduler = scheduler
        self._settlement = settlement
        self._events = events

    async def quote(
        self, data: Mapping[str, Any] | VideoRequest, provider: str | None = None
    ) -> Quote:
        """Validate a request for a provider and price it (nothing is stored or charged)."""
        name, adapter = self._vendors.require(provider)
        request = parse_request(data)
        problems = adapter.capabilities.problems(request)
        if problems:
            raise InvalidRequest(problems)
        resolved = adapter.capabilities.resolve(request)
        return Quote(resolved, name, self._pricing.quote(resolved, name))

    async def submit(
        self,
        requester: Requester,
        data: Mapping[str, Any] | VideoRequest,
        *,
        provider: str | None = None,
        parent_job_id: str | None = None,
    ) -> Receipt:
        """Check, price and hold credits for a request, and queue it. Nothing is charged on error."""
        quote = await self.quote(data, provider)
        snapshot = await self._gate.check(
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            user_id=requester.user_id,
            request=quote.request,
        )
        now = self._clock.now_ms()
        exempt = requester.is_moderator and snapshot.moderators_exempt
        new = NewJob(
            provider=quote.provider,
            request=quote.request.model_dump(mode="json"),
            cost=quote.cost,
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            user_id=requester.user_id,
            interaction_id=requester.interaction_id,
            upload_limit_bytes=requester.upload_limit_bytes
            or self._config.default_upload_limit_bytes,
            parent_job_id=parent_job_id,
            deadline_at_ms=now + self._config.deadline_s * 1000,
            role_ids=tuple(sorted(requester.role_ids)),
            limits_exempt=exempt,
        )

        async def reserve_and_record(tx: Tx) -> Receipt:
            if requester.interaction_id is not None:
                existing = await self._jobs.find_by_interaction(requester.interaction_id, tx=tx)
                if existing is not None:  # the same interaction again (double click, retry)
                    return Receipt(existing, existing.cost, existing.payer, 0, replayed=True)
            if requester.guild_id and not exempt:
                await self._check_member_limits(tx, requester, snapshot, quote.provider, now)
            if not requester.charge:
                job = await self._jobs.create(new, tx=tx)
                return Receipt(job, quote.cost, "none", 0)
            payer = await self._gate.choose_payer(
                tx,
                snapshot=snapshot,
                guild_id=requester.guild_id,
                user_id=requester.user_id,
                role_ids=requester.role_ids,
                cost=quote.cost,
                now_ms=now,
            )
            threshold = snapshot.approval_threshold
            over = threshold is not None and quote.cost > threshold
            if payer.kind == "pool" and over and not requester.is_moderator:
                # nothing is held while a moderator decides; approval reserves then
                waiting = NewJob(**{**new.__dict__, "payer": "pool", "state": S.AWAITING_APPROVAL})
                job = await self._jobs.create(waiting, tx=tx)
                pool_left = await self._ledger.balance(payer.account, tx=tx)
                return Receipt(job, quote.cost, "pool", pool_left.available)
            key = (
                f"hold:{requester.interaction_id}" if requester.interaction_id else f"hold:{new.id}"
            )
            hold = await self._ledger.reserve(
                key=key,
                payer=payer.account,
                amount=quote.cost,
                job_id=new.id,
                user_id=requester.user_id,
                tx=tx,
            )
            job = await self._jobs.create(
                NewJob(**{**new.__dict__, "payer": payer.kind, "hold_id": hold.id}), tx=tx
            )
            after = await self._ledger.balance(payer.account, tx=tx)
            return Receipt(job, quote.cost, payer.kind, after.available)

        receipt = await self._db.write(reserve_and_record)
        if not receipt.replayed:
            self._events.publish(receipt.job, JobEvent.QUEUED)
        return receipt

    async def _check_member_limits(
        self, tx: Tx, requester: Requester, snapshot: PolicySnapshot, provider: str, now: int
    ) -> None:
        """Queued jobs and cooldown per member; a refusal names the limit and when it frees up."""
        activity = await self._jobs.member_activity(requester.guild_id, requester.user_id, tx=tx)
        cooldown_s = snapshot.member_cooldown_s
        if cooldown_s is None:
            cooldown_s = self._config.member_cooldown_s
        if cooldown_s and activity.last_request_ms is not None:
            ready_ms = activity.last_request_ms + cooldown_s * 1000
            if now < ready_ms:
                raise PolicyRefusal(
                    "cooldown",
                    f"This server asks members to wait {cooldown_s} s between videos.",
                    resets_at_ms=ready_ms,
                )
        max_queued = snapshot.member_max_queued
        if max_queued is None:
            max_queued = self._config.member_max_queued
        if activity.queued >= max_queued:
            frees_ms = None
            if activity.oldest_live_submitted_ms is not None:
                frees_ms = max(
                    now, activity.oldest_live_submitted_ms + await self.typical_run_ms(provider)
                )
            message = (
                f"You already have {activity.queued} videos waiting, the most this server allows"
                f" ({max_queued}); another can join when one of them starts."
            )
            if frees_ms is not None:
                message += f" That should be <t:{frees_ms // 1000}:R>."
            raise PolicyRefusal("queued_jobs", message)

    async def job_for(self, job_id: str, actor: Actor) -> Job:
        """The job, if `actor` may act on it from where they are; else NotFound, the same answer
        for a job that does not exist and one of another server."""
        job = await self._jobs.find(job_id)
        if job is None or not actor.may_see(job):
            raise NotFound(f"There is no job {job_id} in this server.")
        return job

    async def cancel(self, job_id: str, actor: Actor) -> Job:
        """Cancel a job for its requester or a moderator of its server; the hold is voided."""
        job = await self.job_for(job_id, actor)
        actor_id = actor.user_id
        if actor_id != job.user_id and not (actor.is_moderator or actor.is_owner):
            raise NotPermitted(
                "Only the member who asked for this video or a moderator can cancel it."
            )
        if job.state not in CANCELLABLE:
            raise UserError(
                f"This job can no longer be cancelled (it is {job.state.value.replace('_', ' ')})."
            )
        provider = self._vendors.get(job.provider)
        if job.state in LIVE and job.provider_job_id and provider and provider.capabilities.cancel:
            try:
                await provider.cancel(ProviderJob(job.provider_job_id, job.provider_data))
            except ProviderError as error:
                log.warning("cancel of %s at %s failed: %r", job.id, job.provider, error)
        try:
            job = await self._settlement.settle(
                job, S.CANCELLED, CANCELLABLE, void_reason="cancelled", detail=f"by {actor_id}"
            )
        except IllegalTransition:
            job = await self._jobs.get(job_id)
            raise UserError(
                f"This job can no longer be cancelled (it is {job.state.value})."
            ) from None
        self._scheduler.discard(job.id)
        return job

    async def position_and_eta(self, job: Job) -> tuple[int | None, int | None]:
        """A queued job's place in line; a running job's expected finish (unix ms)."""
        position = await self._jobs.queue_position(job)
        eta_ms = None
        run_ms = await self.typical_run_ms(job.provider)
        if job.state in LIVE and job.submitted_at_ms:
            eta_ms = job.submitted_at_ms + run_ms
        elif position is not None:
            slots = max(1, self._config.slots(job.provider))
            eta_ms = self._clock.now_ms() + (1 + (position - 1) // slots) * run_ms
        return position, eta_ms

    async def typical_run_ms(self, provider: str) -> int:
        """The median run time of the provider's recent jobs (4 minutes until there are some)."""
        runs = sorted(await self._jobs.recent_run_ms(provider))
        return runs[len(runs) // 2] if runs else DEFAULT_RUN_MS

"""Failover: a job whose provider refuses creates (no funds, bad key, or keeps failing) moves to
the next configured provider that can make it, at that provider's price, and each affected
guild hears about the incident once (through the incident handlers given at construction).

A move that costs more goes through the payer rules of the first hold, for the new total: a
server's confirmation threshold (the member agreed to a price, not to any price), the pool's
approval threshold and the member's daily pool cap, and the payer's balance. If the rules would
ask someone first, the job is not moved, and the reason is kept for the member's message."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bot.pipeline.config import PipelineConfig
from bot.pipeline.events import EventBus, JobEvent
from bot.pipeline.models import ProviderIncident
from bot.pipeline.policy import day_start_ms
from bot.pipeline.settlement import payer_account
from bot.pipeline.vendors import Vendors
from bot.pricing import PriceTable
from bot.providers import ProviderError
from bot.request import VideoRequest
from storage import (
    Database,
    GuildPolicy,
    Job,
    JobState,
    JobStore,
    Ledger,
    LedgerError,
    PolicySnapshot,
    Tx,
)

log = logging.getLogger(__name__)

IncidentHandler = Callable[[ProviderIncident], Awaitable[None]]


class MoveRefused(Exception):
    """A dearer provider would need someone's say first; `str()` tells the member why."""


@dataclass(frozen=True)
class Moved:
    """What `Failover.move` did: moved, or not, and the payer rule that stopped a move."""

    moved: bool
    refusal: str | None = None


class Failover:
    def __init__(
        self,
        *,
        db: Database,
        jobs: JobStore,
        ledger: Ledger,
        policy: GuildPolicy,
        vendors: Vendors,
        pricing: PriceTable,
        config: PipelineConfig,
        events: EventBus,
        incident_handlers: Iterable[IncidentHandler] = (),
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._ledger = ledger
        self._policy = policy
        self._clock = db.clock
        self._vendors = vendors
        self._pricing = pricing
        self._config = config
        self._events = events
        self._incident_handlers = tuple(incident_handlers)
        self._told: dict[str, set[int]] = {}  # provider -> guilds told about its outage

    def recovered(self, provider: str) -> None:
        """`provider` accepted a create again: a later outage is a new incident."""
        self._told.pop(provider, None)

    async def move(self, job: Job, error: ProviderError) -> Moved:
        """Move a job whose create failed to the next provider that can make it under the payer
        rules; `Moved(False, refusal)` if none can (refusal: why a dearer one was not used)."""
        chain = list(self._config.provider_chain) or [self._vendors.default]
        if job.provider not in chain:
            return Moved(False)
        request = VideoRequest.model_validate(job.request)
        snapshot = await self._policy.get(job.guild_id)
        refusal: str | None = None
        for name in chain[chain.index(job.provider) + 1 :]:
            adapter = self._vendors.get(name)
            if adapter is None or adapter.capabilities.problems(request):
                continue
            cost = self._pricing.quote(adapter.capabilities.resolve(request), name)
            try:
                moved = await self._db.write(
                    partial(
                        self._requeue_at,
                        job=job,
                        provider=name,
                        cost=cost,
                        error=error,
                        snapshot=snapshot,
                    )
                )
            except (LedgerError, MoveRefused) as why:
                log.info("job %s cannot move to %s: %s", job.id, name, why)
                refusal = refusal or f"It could not move to {name}: {why}"
                continue
            self._events.publish(moved, JobEvent.FAILOVER)
            await self._report(job, error, name)
            return Moved(True)
        return Moved(False, refusal)

    async def _check_dearer(
        self, tx: Tx, job: Job, snapshot: PolicySnapshot, cost: int, held: int
    ) -> None:
        """The rules the first hold went through, for a move that costs `cost` instead."""
        confirm = snapshot.confirm_threshold
        if confirm is not None and cost > confirm:
            raise MoveRefused(
                f"it costs {cost} credits, not {held}, and this server asks members to confirm"
                f" videos above {confirm}."
            )
        if job.payer != "pool":
            return  # the member's own balance: the ledger refuses what it does not cover
        approval = snapshot.approval_threshold
        if approval is not None and cost > approval:
            raise MoveRefused(
                f"it costs {cost} credits from the server pool, above the {approval} a moderator"
                " must approve."
            )
        cap = snapshot.cap_for(frozenset(job.role_ids))
        if cap is not None:
            since = day_start_ms(self._clock.now_ms())
            drawn = await self._ledger.drawn_from_pool(job.guild_id, job.user_id, since, tx=tx)
            if drawn + (cost - held) > cap:
                raise MoveRefused(
                    f"it costs {cost - held} more credits, past the member's daily pool cap of"
                    f" {cap} ({drawn} used today)."
                )

    async def _requeue_at(
        self,
        tx: Tx,
        job: Job,
        provider: str,
        cost: int,
        error: ProviderError,
        snapshot: PolicySnapshot,
    ) -> Job:
        """Requeue on another provider at its price: the same hold, topped up if it costs more
        and the payer rules allow it."""
        held = 0
        if job.hold_id is not None:
            hold, _ = await self._ledger.hold(job.hold_id, tx=tx)
            held = hold.amount
        changes: dict[str, Any] = {}
        if job.hold_id is not None and cost > held:
            await self._check_dearer(tx, job, snapshot, cost, held)
        if job.hold_id is not None and cost > held and job.topup_hold_id is None:
            topup = await self._ledger.reserve(
                key=f"topup:{job.id}:{provider}",
                payer=payer_account(job),
                amount=cost - held,
                job_id=job.id,
                user_id=job.user_id,
                reason="failover",
                tx=tx,
            )
            changes["topup_hold_id"] = topup.id
        return await self._jobs.transition(
            job.id,
            JobState.QUEUED,
            from_states=frozenset({JobState.SUBMITTED}),
            provider=provider,
            cost=cost,
            submit_attempts=0,
            next_poll_at_ms=None,
            provider_job_id=None,
            error_kind=error.kind.value,
            error_message=error.detail[:500],
            detail=f"moved from {job.provider} to {provider} ({error.kind.value})",
            tx=tx,
            **changes,
        )

    async def _report(self, job: Job, error: ProviderError, moved_to: str) -> None:
        """Tell each affected guild once per provider incident, not once per job."""
        told = self._told.setdefault(job.provider, set())
        if job.guild_id in told:
            return
        told.add(job.guild_id)
        incident = ProviderIncident(
            job.provider, error.kind.value, error.detail[:300], moved_to, job.guild_id
        )
        for handler in self._incident_handlers:
            try:
                await handler(incident)
            except Exception:
                log.exception("incident handler failed")

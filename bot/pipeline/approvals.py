"""Approvals: a pool-paid request above the server's threshold waits for a moderator.

Nothing is held while it waits. Approve reserves the credits then (under the payer rules at that
moment) and queues the job; deny rejects it; the sweeper lapses requests nobody answered in time.
"""

from __future__ import annotations

from bot.errors import NotFound, NotPermitted, UserError
from bot.pipeline.config import PipelineConfig
from bot.pipeline.events import EventBus, JobEvent
from bot.pipeline.models import Actor
from bot.pipeline.policy import PolicyGate
from storage import (
    Clock,
    Database,
    GuildPolicy,
    IllegalTransition,
    Job,
    JobState,
    JobStore,
    Ledger,
    Tx,
)

S = JobState
AWAITING = frozenset({S.AWAITING_APPROVAL})


class Approvals:
    def __init__(
        self,
        *,
        db: Database,
        jobs: JobStore,
        ledger: Ledger,
        policy: GuildPolicy,
        gate: PolicyGate,
        clock: Clock,
        config: PipelineConfig,
        events: EventBus,
    ) -> None:
        self._db = db
        self._jobs = jobs
        self._ledger = ledger
        self._policy = policy
        self._gate = gate
        self._clock = clock
        self._config = config
        self._events = events

    async def approve(self, job_id: str, actor: Actor) -> Job:
        """A moderator approves a waiting job: its credits are held now and it is queued."""
        job = await self._awaiting(job_id, actor)
        actor_id = actor.user_id
        snapshot = await self._policy.get(job.guild_id)
        now = self._clock.now_ms()

        async def run(tx: Tx) -> Job:
            payer = await self._gate.choose_payer(
                tx,
                snapshot=snapshot,
                guild_id=job.guild_id,
                user_id=job.user_id,
                role_ids=frozenset(job.role_ids),
                cost=job.cost,
                now_ms=now,
            )
            hold = await self._ledger.reserve(
                key=f"hold:approved:{job.id}",
                payer=payer.account,
                amount=job.cost,
                job_id=job.id,
                user_id=job.user_id,
                tx=tx,
            )
            await self._policy.record(
                job.guild_id,
                actor_id=actor_id,
                action="approve",
                target_id=job.user_id,
                detail=f"job {job.id}, {job.cost} credits",
                tx=tx,
            )
            await self._jobs.assign_round(job.id, tx=tx)  # joins the queue now, not when it asked
            return await self._jobs.transition(
                job.id,
                S.QUEUED,
                from_states=AWAITING,
                payer=payer.kind,
                hold_id=hold.id,
                deadline_at_ms=now + self._config.deadline_s * 1000,
                detail=f"approved by {actor_id}",
                tx=tx,
            )

        try:
            approved = await self._db.write(run)
        except IllegalTransition:
            raise UserError("This request was already answered.") from None
        self._events.publish(approved, JobEvent.APPROVED)
        return approved

    async def deny(self, job_id: str, actor: Actor, *, reason: str | None = None) -> Job:
        """A moderator declines a waiting job; nothing was held, so nothing is refunded."""
        job = await self._awaiting(job_id, actor)
        actor_id = actor.user_id
        why = f"A moderator declined it: {reason}" if reason else "A moderator declined it."

        async def run(tx: Tx) -> Job:
            await self._policy.record(
                job.guild_id,
                actor_id=actor_id,
                action="deny",
                target_id=job.user_id,
                detail=f"job {job.id}",
                reason=reason,
                tx=tx,
            )
            return await self._jobs.transition(
                job.id,
                S.REJECTED,
                from_states=AWAITING,
                error_kind="denied",
                error_message=why,
                finished_at_ms=self._clock.now_ms(),
                detail=f"denied by {actor_id}",
                tx=tx,
            )

        try:
            denied = await self._db.write(run)
        except IllegalTransition:
            raise UserError("This request was already answered.") from None
        self._events.publish(denied, JobEvent.REJECTED)
        return denied

    async def _awaiting(self, job_id: str, actor: Actor) -> Job:
        job = await self._jobs.find(job_id)
        if job is None or not actor.may_see(job):
            raise NotFound(f"There is no job {job_id} in this server.")
        if not (actor.is_moderator or actor.is_owner):
            raise NotPermitted("Only moderators can answer approval requests.")
        if job.state is not S.AWAITING_APPROVAL:
            raise UserError(
                f"This request was already answered (it is {job.state.value.replace('_', ' ')})."
            )
        return job

    async def lapse(self) -> int:
        """Reject requests that waited longer than their guild's approval timeout."""
        now = self._clock.now_ms()
        lapsed = 0
        for job in await self._jobs.in_states(AWAITING):
            timeout_s = (await self._policy.get(job.guild_id)).approval_timeout_s
            if now - job.created_at_ms < timeout_s * 1000:
                continue
            hours = max(1, round(timeout_s / 3600))
            try:
                job = await self._jobs.transition(
                    job.id,
                    S.REJECTED,
                    from_states=AWAITING,
                    error_kind="lapsed",
                    finished_at_ms=now,
                    error_message=f"No moderator answered within {hours} h; nothing was charged.",
                    detail="approval lapsed",
                )
            except IllegalTransition:
                continue
            lapsed += 1
            self._events.publish(job, JobEvent.REJECTED)
        return lapsed

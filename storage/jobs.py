"""Job rows and their state machine (DESIGN.md section 6).

    awaiting_approval ─> queued ─> submitted ─> running ─> succeeded ─> delivered
         │ deny            │ reject   │ provider failure / moderation        │ post failed
         v                 v          v                                      v
      rejected          rejected    failed        cancelled   expired     delivery_failed

A state change is a compare-and-set: it only happens from a state that allows it, so a webhook and
the poller racing to record the same outcome cannot both win. The database refuses illegal
transitions too (trigger `jobs_legal_transition`), and every change appends a job event.

Why one module of this length: every SQL statement about jobs lives here, next to the state machine it enforces.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from storage.batching import RowsStatement
from storage.database import Database, Row, Tx
from storage.errors import INTEGRITY_ERRORS, IllegalTransition, JobNotFound, LeaseLost
from storage.seen_deliveries import SeenDeliveries
from storage.webhook_targets import WebhookTarget, WebhookTargets

__all__ = ["FINAL_STATES", "Job", "JobEvent", "JobState", "JobStore", "NewJob"]


class JobState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DELIVERY_FAILED = "delivery_failed"


S = JobState
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.AWAITING_APPROVAL: frozenset({S.QUEUED, S.REJECTED, S.CANCELLED}),
    S.QUEUED: frozenset({S.SUBMITTED, S.REJECTED, S.FAILED, S.CANCELLED, S.EXPIRED}),
    S.SUBMITTED: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED, S.QUEUED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.EXPIRED}),
    S.SUCCEEDED: frozenset({S.DELIVERED, S.DELIVERY_FAILED, S.FAILED}),
    S.DELIVERY_FAILED: frozenset({S.DELIVERED}),
    S.EXPIRED: frozenset({S.SUCCEEDED}),
    S.DELIVERED: frozenset(),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
# Columns a webhook handler checks: writing them makes a remembered WebhookTarget stale.
_TARGET_FIELDS = frozenset({"provider", "provider_job_id"})
FINAL_STATES = frozenset({S.DELIVERED, S.REJECTED, S.FAILED, S.CANCELLED})
AT_PROVIDER_STATES = frozenset({S.SUBMITTED, S.RUNNING})


def sources_of(target: JobState) -> frozenset[JobState]:
    """States from which `target` may be entered."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


@dataclass(frozen=True)
class Job:
    """A stored job."""

    id: str
    guild_id: int
    channel_id: int
    user_id: int
    interaction_id: int | None
    status_message_id: int | None
    result_message_id: int | None
    approval_message_id: int | None
    state: JobState
    provider: str
    provider_job_id: str | None
    request: dict[str, Any]
    cost: int
    payer: str
    hold_id: int | None
    webhook_token: str
    media_token: str
    progress_pct: int | None
    provider_status: str | None
    error_kind: str | None
    error_message: str | None
    video_url: str | None
    media_path: str | None
    media_size_bytes: int | None
    upload_limit_bytes: int
    submit_attempts: int
    delivery_attempts: int
    delivered_via: str | None
    parent_job_id: str | None
    created_at_ms: int
    updated_at_ms: int
    submitted_at_ms: int | None
    finished_at_ms: int | None
    deadline_at_ms: int | None
    next_poll_at_ms: int | None
    provider_data: dict[str, str]
    poll_count: int
    charged: int
    role_ids: tuple[int, ...]
    approval_channel_id: int | None
    fair_round: int
    limits_exempt: bool
    topup_hold_id: int | None
    media_retired_at_ms: int | None
    lease_owner: str | None  # the process working on the job (see storage.leases)
    lease_until_ms: int | None
    status_shown: str | None  # the final state its status message was seen to show

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_row(cls, row: Row) -> Job:
        derived = ("request", "state", "provider_data", "role_ids", "limits_exempt")
        values = {f.name: row[f.name] for f in fields(cls) if f.name not in derived}
        return cls(
            state=JobState(row["state"]),
            request=json.loads(row["request_json"]),
            provider_data=json.loads(row["provider_data_json"]),
            role_ids=tuple(json.loads(row["role_ids_json"])),
            limits_exempt=bool(row["limits_exempt"]),
            **values,
        )


@dataclass(frozen=True)
class NewJob:
    """What it takes to record a job."""

    provider: str
    request: dict[str, Any]
    cost: int
    state: JobState = JobState.QUEUED
    guild_id: int = 0
    channel_id: int = 0
    user_id: int = 0
    interaction_id: int | None = None
    payer: str = "none"
    hold_id: int | None = None
    upload_limit_bytes: int = 10 * 1024 * 1024
    parent_job_id: str | None = None
    deadline_at_ms: int | None = None
    role_ids: tuple[int, ...] = ()
    limits_exempt: bool = False
    id: str = field(default_factory=lambda: secrets.token_hex(6))


@dataclass(frozen=True)
class QueueCandidate:
    job: Job
    member_live: int  # the member's jobs at a provider right now
    guild_max_live: int | None  # the guild's limit, if it set one


@dataclass(frozen=True)
class MemberActivity:
    queued: int
    live: int
    last_request_ms: int | None
    oldest_live_submitted_ms: int | None


@dataclass(frozen=True)
class JobEvent:
    at_ms: int
    from_state: str | None
    to_state: str
    detail: str | None


# Columns a caller may set through update()/transition(); the rest are fixed at creation.
MUTABLE_COLUMNS = frozenset(
    {
        "status_message_id",
        "status_shown",
        "result_message_id",
        "approval_message_id",
        "provider",
        "provider_job_id",
        "cost",
        "payer",
        "hold_id",
        "progress_pct",
        "provider_status",
        "error_kind",
        "error_message",
        "video_url",
        "media_path",
        "media_size_bytes",
        "upload_limit_bytes",
        "submit_attempts",
        "delivery_attempts",
        "delivered_via",
        "submitted_at_ms",
        "finished_at_ms",
        "deadline_at_ms",
        "next_poll_at_ms",
        "poll_count",
        "charged",
        "approval_channel_id",
        "fair_round",
        "topup_hold_id",
        "lease_owner",
        "lease_until_ms",
    }
)


class JobStore:
    """Jobs over a Database. Methods accept `tx` to join a caller's transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._targets = WebhookTargets()
        self._seen = SeenDeliveries()
        # Webhook deliveries received at the same time are stored by one statement and commit.
        self._deliveries = RowsStatement(
            db,
            "INSERT INTO webhook_deliveries (provider, delivery_key, job_id, received_at_ms)"
            " VALUES ",
            "(?, ?, ?, ?)",
            " ON CONFLICT DO NOTHING RETURNING provider, delivery_key",
            key_columns=("provider", "delivery_key"),
            refusals=INTEGRITY_ERRORS,
        )
        # SQLite's two-argument MAX is PostgreSQL's GREATEST.
        self._greatest = "GREATEST" if db.dialect == "postgresql" else "MAX"

    async def create(self, new: NewJob, *, tx: Tx | None = None) -> Job:
        now = self._db.clock.now_ms()

        async def run(t: Tx) -> Job:
            row = await t.fetchone(
                "INSERT INTO jobs (id, guild_id, channel_id, user_id, interaction_id, state, provider,"
                " request_json, cost, payer, hold_id, webhook_token, media_token,"
                " upload_limit_bytes, parent_job_id, created_at_ms, updated_at_ms, deadline_at_ms,"
                " role_ids_json, limits_exempt, fair_round)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
                f"  (SELECT {self._greatest}((SELECT round FROM queue_clock), COALESCE((SELECT MAX(fair_round) + 1"
                "   FROM jobs WHERE guild_id = ? AND user_id = ?"
                "   AND state IN ('queued', 'submitted', 'running')), 0)))) RETURNING *",
                (
                    new.id,
                    new.guild_id,
                    new.channel_id,
                    new.user_id,
                    new.interaction_id,
                    new.state.value,
                    new.provider,
                    json.dumps(new.request, sort_keys=True),
                    new.cost,
                    new.payer,
                    new.hold_id,
                    secrets.token_urlsafe(24),
                    secrets.token_urlsafe(16),
                    new.upload_limit_bytes,
                    new.parent_job_id,
                    now,
                    now,
                    new.deadline_at_ms,
                    json.dumps(sorted(new.role_ids)),
                    int(new.limits_exempt),
                    new.guild_id,
                    new.user_id,
                ),
            )
            assert row is not None
            await _event(t, new.id, now, None, new.state, "created")
            job = Job.from_row(row)
            t.after_commit(lambda: self._put_target(job))
            return job

        return await (run(tx) if tx is not None else self._db.write(run))

    async def transition(
        self,
        job_id: str,
        to_state: JobState,
        *,
        from_states: frozenset[JobState] | None = None,
        detail: str | None = None,
        held_by: str | None = None,
        tx: Tx | None = None,
        **changes: Any,
    ) -> Job:
        """Move a job to `to_state` (and set `changes`) if its current state allows it.

        Raises IllegalTransition (or JobNotFound) otherwise. `from_states` narrows the allowed
        sources further, for callers that expect a specific state. With `held_by`, only if that
        process holds the job's lease (LeaseLost otherwise): an outcome is recorded by the lease
        owner alone.
        """
        allowed = (
            sources_of(to_state) if from_states is None else from_states & sources_of(to_state)
        )
        _check_columns(changes)
        now = self._db.clock.now_ms()
        assignments = ", ".join(f"{name} = ?" for name in changes)
        placeholders = ",".join("?" for _ in allowed) or "NULL"

        lease, lease_params = ("", ()) if held_by is None else (" AND lease_owner = ?", (held_by,))

        async def run(t: Tx) -> Job:
            current = await t.fetchone(
                "SELECT state, lease_owner FROM jobs WHERE id = ?", (job_id,)
            )
            if current is None:
                raise JobNotFound(job_id)
            row = await t.fetchone(
                f"UPDATE jobs SET state = ?, updated_at_ms = ?{', ' if changes else ''}{assignments}"
                f" WHERE id = ? AND state IN ({placeholders}){lease} RETURNING *",
                (
                    to_state.value,
                    now,
                    *changes.values(),
                    job_id,
                    *(s.value for s in allowed),
                    *lease_params,
                ),
            )
            if row is None:
                if held_by is not None and current["lease_owner"] != held_by:
                    raise LeaseLost(job_id)
                raise IllegalTransition(job_id, current["state"], to_state.value)
            await _event(t, job_id, now, current["state"], to_state, detail)
            job = Job.from_row(row)
            if _TARGET_FIELDS & changes.keys():
                t.after_commit(lambda: self._put_target(job))
            return job

        return await (run(tx) if tx is not None else self._db.write(run))

    async def update(
        self, job_id: str, *, held_by: str | None = None, tx: Tx | None = None, **changes: Any
    ) -> Job:
        """Set non-state fields of a job; with `held_by`, only if that process holds the job's
        lease (LeaseLost otherwise, a missing job included)."""
        changes = _columns(changes)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        lease = "" if held_by is None else " AND lease_owner = ?"
        sql = (
            f"UPDATE jobs SET updated_at_ms = ?{', ' if changes else ''}{assignments}"
            f" WHERE id = ?{lease} RETURNING *"
        )
        params = (self._db.clock.now_ms(), *changes.values(), job_id)
        if held_by is not None:
            params = (*params, held_by)
        rows = await (tx.fetchall(sql, params) if tx else self._db.write_statement(sql, params))
        if not rows:
            raise JobNotFound(job_id) if held_by is None else LeaseLost(job_id)
        job = Job.from_row(rows[0])
        if _TARGET_FIELDS & changes.keys():
            if tx is None:
                self._put_target(job)  # committed already
            else:
                tx.after_commit(lambda: self._put_target(job))
        return job

    def _put_target(self, job: Job) -> None:
        """Remember what a committed write made of `job`'s webhook target."""
        self._targets.put(
            job.webhook_token, WebhookTarget(job.id, job.provider, job.provider_job_id)
        )

    async def adopt(self, job_id: str, provider_job_id: str) -> bool:
        """Record the vendor's job id of a job whose create got no answer, unless it has one
        already (a poll or another process found it first); True if this set it."""
        rows = await self._db.write_statement(
            "UPDATE jobs SET provider_job_id = ?, updated_at_ms = ? WHERE id = ?"
            " AND provider_job_id IS NULL RETURNING *",
            (provider_job_id, self._db.clock.now_ms(), job_id),
        )
        if rows:
            self._put_target(Job.from_row(rows[0]))
        return bool(rows)

    async def retire_media(self, job_id: str) -> Job:
        """Retire the job's clip link (its message was deleted): /media answers 404 from now on.
        Idempotent: the first retirement's time is kept."""
        now = self._db.clock.now_ms()
        rows = await self._db.write_statement(
            "UPDATE jobs SET media_retired_at_ms = COALESCE(media_retired_at_ms, ?),"
            " updated_at_ms = ? WHERE id = ? RETURNING *",
            (now, now, job_id),
        )
        if not rows:
            raise JobNotFound(job_id)
        return Job.from_row(rows[0])

    async def status_behind(self, updated_before_ms: int, *, limit: int = 200) -> list[Job]:
        """Final jobs whose status message is not known to show their final state, unchanged
        since `updated_before_ms` (whoever changed them last had time to edit it)."""
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE status_message_id IS NOT NULL"
            " AND (status_shown IS NULL OR status_shown <> state)"
            " AND state IN ('delivered', 'rejected', 'failed', 'cancelled')"
            " AND updated_at_ms < ? ORDER BY updated_at_ms LIMIT ?",
            (updated_before_ms, limit),
        )
        return [Job.from_row(r) for r in rows]

    async def get(self, job_id: str, *, tx: Tx | None = None) -> Job:
        job = await self.find(job_id, tx=tx)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def find(self, job_id: str, *, tx: Tx | None = None) -> Job | None:
        sql = "SELECT * FROM jobs WHERE id = ?"
        row = await (tx.fetchone(sql, (job_id,)) if tx else self._db.fetchone(sql, (job_id,)))
        return Job.from_row(row) if row else None

    async def webhook_target(self, token: str, *, fresh: bool = False) -> WebhookTarget | None:
        """Which job a webhook URL's token belongs to (remembered after the first lookup).

        A remembered target is exact for this process's own writes; another process sharing the
        database may have changed the job's provider or provider job id since (failover, a lost
        create adopted), so a caller whose answer would refuse the webhook or write asks again
        with `fresh`."""
        known = None if fresh else self._targets.get(token)
        if known is not None:
            return known
        generation = self._targets.generation
        row = await self._db.fetchone(
            "SELECT id, provider, provider_job_id FROM jobs WHERE webhook_token = ?", (token,)
        )
        if row is None:
            return None
        target = WebhookTarget(row["id"], row["provider"], row["provider_job_id"])
        self._targets.remember(token, target, generation)
        return target

    async def unfinished_ids(self) -> set[str]:
        """Ids of every job not in a final state (cheaper than loading the rows)."""
        final = sorted(s.value for s in FINAL_STATES)
        marks = ",".join("?" for _ in final)
        rows = await self._db.fetchall(f"SELECT id FROM jobs WHERE state NOT IN ({marks})", final)
        return {r["id"] for r in rows}

    async def find_by_interaction(self, interaction_id: int, *, tx: Tx | None = None) -> Job | None:
        sql = "SELECT * FROM jobs WHERE interaction_id = ? ORDER BY created_at_ms LIMIT 1"
        row = await (
            tx.fetchone(sql, (interaction_id,)) if tx else self._db.fetchone(sql, (interaction_id,))
        )
        return Job.from_row(row) if row else None

    async def count_at_provider(self, provider: str, *, tx: Tx | None = None) -> int:
        """Jobs the provider is working on (submitted or running)."""
        sql = "SELECT COUNT(*) AS n FROM jobs WHERE state IN ('submitted', 'running') AND provider = ?"
        row = await (tx.fetchone(sql, (provider,)) if tx else self._db.fetchone(sql, (provider,)))
        return int(row["n"]) if row else 0

    async def queue_candidates(
        self, provider: str, *, now_ms: int, limit: int, tx: Tx | None = None
    ) -> list[QueueCandidate]:
        """Queued jobs a provider may take now, in fair order, with their member's load. In a
        caller's transaction on PostgreSQL, the rows are locked, skipping those another
        transaction holds (FOR UPDATE SKIP LOCKED)."""
        lock = " FOR UPDATE OF j SKIP LOCKED" if tx and self._db.dialect == "postgresql" else ""
        read = tx.fetchall if tx else self._db.fetchall
        rows = await read(
            "SELECT j.*,"
            " (SELECT COUNT(*) FROM jobs AS l WHERE l.guild_id = j.guild_id"
            "   AND l.user_id = j.user_id AND l.state IN ('submitted', 'running')) AS member_live,"
            " (SELECT member_max_live FROM guild_policies AS g WHERE g.guild_id = j.guild_id)"
            "   AS guild_max_live"
            " FROM jobs AS j WHERE j.state = 'queued' AND j.provider = ?"
            " AND (j.next_poll_at_ms IS NULL OR j.next_poll_at_ms <= ?)"
            " ORDER BY j.fair_round, j.rowid LIMIT ?" + lock,
            (provider, now_ms, limit),
        )
        return [
            QueueCandidate(Job.from_row(r), r["member_live"], r["guild_max_live"]) for r in rows
        ]

    async def advance_queue_round(self, fair_round: int, *, tx: Tx) -> None:
        """Remember the round of a job leaving the queue: newcomers start from it."""
        await tx.execute(
            f"UPDATE queue_clock SET round = {self._greatest}(round, ?)", (fair_round,)
        )

    async def assign_round(self, job_id: str, *, tx: Tx) -> None:
        """Give a job that (re-)enters the queue its member's next fair round."""
        await tx.execute(
            f"UPDATE jobs SET fair_round = (SELECT {self._greatest}((SELECT round FROM queue_clock),"
            " COALESCE((SELECT MAX(o.fair_round) + 1 FROM jobs AS o WHERE o.guild_id = jobs.guild_id"
            "   AND o.user_id = jobs.user_id AND o.id <> jobs.id"
            "   AND o.state IN ('queued', 'submitted', 'running')), 0))) WHERE id = ?",
            (job_id,),
        )

    async def queue_positions(
        self, provider: str, *, limit: int = 100_000
    ) -> list[tuple[str, int]]:
        """(job id, 1-based place) of a provider's queued jobs, in order."""
        rows = await self._db.fetchall(
            "SELECT id FROM jobs WHERE state = 'queued' AND provider = ?"
            " ORDER BY fair_round, rowid LIMIT ?",
            (provider, limit),
        )
        return [(r["id"], n) for n, r in enumerate(rows, start=1)]

    async def queue_overview(self, guild_id: int | None = None) -> list[Job]:
        """Every queued job (of one guild, or all), in fair order per provider."""
        sql = "SELECT * FROM jobs WHERE state = 'queued'"
        params: list[Any] = []
        if guild_id is not None:
            sql += " AND guild_id = ?"
            params.append(guild_id)
        sql += " ORDER BY provider, fair_round, rowid"
        return [Job.from_row(r) for r in await self._db.fetchall(sql, params)]

    async def member_activity(
        self, guild_id: int, user_id: int, *, tx: Tx | None = None
    ) -> MemberActivity:
        """A member's waiting and running jobs in a guild, and their last request."""
        sql = (
            "SELECT"
            " SUM(CASE WHEN state IN ('queued', 'awaiting_approval') THEN 1 ELSE 0 END) AS queued,"
            " SUM(CASE WHEN state IN ('submitted', 'running') THEN 1 ELSE 0 END) AS live,"
            " MAX(created_at_ms) AS last_ms,"
            " MIN(CASE WHEN state IN ('submitted', 'running') THEN submitted_at_ms END) AS oldest_live_ms"
            " FROM jobs WHERE guild_id = ? AND user_id = ?"
        )
        row = await (
            tx.fetchone(sql, (guild_id, user_id))
            if tx
            else self._db.fetchone(sql, (guild_id, user_id))
        )
        if row is None:
            return MemberActivity(0, 0, None, None)
        return MemberActivity(
            row["queued"] or 0, row["live"] or 0, row["last_ms"], row["oldest_live_ms"]
        )

    async def queue_position(self, job: Job) -> int | None:
        """1-based place of a queued job in its provider's fair order (None if not queued)."""
        if job.state is not JobState.QUEUED:
            return None
        row = await self._db.fetchone(  # two index ranges of jobs_queue: earlier rounds, then ties
            "SELECT (SELECT COUNT(*) FROM jobs AS q WHERE q.state = 'queued'"
            "   AND q.provider = me.provider AND q.fair_round < me.fair_round)"
            " + (SELECT COUNT(*) FROM jobs AS q WHERE q.state = 'queued' AND q.provider = me.provider"
            "   AND q.fair_round = me.fair_round AND q.rowid < me.rowid) AS ahead"
            " FROM jobs AS me WHERE me.id = ?",
            (job.id,),
        )
        return int(row["ahead"]) + 1 if row else 1

    async def recent_run_ms(self, provider: str, *, limit: int = 25) -> list[int]:
        """How long the provider took (submit to result) for its latest finished jobs."""
        rows = await self._db.fetchall(
            "SELECT finished_at_ms - submitted_at_ms AS run_ms FROM jobs"
            " WHERE provider = ? AND state IN ('succeeded', 'delivered', 'delivery_failed')"
            " AND submitted_at_ms IS NOT NULL AND finished_at_ms IS NOT NULL"
            " ORDER BY finished_at_ms DESC LIMIT ?",
            (provider, limit),
        )
        return [int(r["run_ms"]) for r in rows]

    @property
    def delivery_statements(self) -> int:
        """Statements written to store webhook deliveries (deliveries received at once share
        one; for tests and benchmarks)."""
        return self._deliveries.batches

    async def record_webhook(self, provider: str, delivery_key: str, job_id: str) -> bool:
        """Remember a webhook delivery; False if this key was seen before (a retry)."""
        key = (provider, delivery_key[:200])
        if key in self._seen:
            return False  # stored already: no write needed to know it
        rows = await self._deliveries.write((*key, job_id, self._db.clock.now_ms()))
        self._seen.add(key)
        return bool(rows)

    async def prune_webhook_deliveries(self, received_before_ms: int, *, limit: int = 5000) -> int:
        """Forget up to `limit` deliveries received before `received_before_ms` for jobs in a
        final state (a retry that late changes nothing); return how many."""
        final = sorted(s.value for s in FINAL_STATES)
        marks = ",".join("?" for _ in final)
        rows = await self._db.write_statement(
            "DELETE FROM webhook_deliveries WHERE rowid IN (SELECT d.rowid FROM"
            " webhook_deliveries AS d JOIN jobs AS j ON j.id = d.job_id"
            f" WHERE d.received_at_ms < ? AND j.state IN ({marks}) LIMIT ?) RETURNING 1",
            (received_before_ms, *final, limit),
        )
        return len(rows)

    async def find_by_provider_job(self, provider: str, provider_job_id: str) -> Job | None:
        row = await self._db.fetchone(
            "SELECT * FROM jobs WHERE provider = ? AND provider_job_id = ?",
            (provider, provider_job_id),
        )
        return Job.from_row(row) if row else None

    async def in_states(
        self, states: frozenset[JobState], *, provider: str | None = None, limit: int = 100_000
    ) -> list[Job]:
        """Jobs in any of `states` (optionally one provider's), oldest first."""
        marks = ",".join("?" for _ in states)
        sql = f"SELECT * FROM jobs WHERE state IN ({marks})"
        params: list[Any] = [s.value for s in states]
        if provider is not None:
            sql += " AND provider = ?"
            params.append(provider)
        sql += " ORDER BY created_at_ms, id LIMIT ?"
        params.append(limit)
        return [Job.from_row(r) for r in await self._db.fetchall(sql, params)]

    async def live_at_provider(self, provider: str | None = None) -> list[Job]:
        """Jobs the provider is working on (submitted or running)."""
        return await self.in_states(AT_PROVIDER_STATES, provider=provider)

    async def unfinished(self) -> list[Job]:
        """Every job not in a final state (what a restart must resume).

        Their webhook targets are remembered on the way, so that the webhooks of jobs resumed
        after a restart cost no database read either."""
        generation = self._targets.generation
        jobs = await self.in_states(frozenset(JobState) - FINAL_STATES)
        for job in jobs:
            target = WebhookTarget(job.id, job.provider, job.provider_job_id)
            self._targets.remember(job.webhook_token, target, generation)
        return jobs

    async def by_user(
        self, guild_id: int, user_id: int, *, limit: int = 10, before_ms: int | None = None
    ) -> list[Job]:
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? AND created_at_ms < ?"
            " ORDER BY created_at_ms DESC, id DESC LIMIT ?",
            (guild_id, user_id, before_ms or 2**62, limit),
        )
        return [Job.from_row(r) for r in rows]

    async def outcomes_by_member(
        self, guild_id: int, since_ms: int, until_ms: int
    ) -> dict[int, dict[JobState, int]]:
        """How many jobs each member asked for in a period, by their current state."""
        rows = await self._db.fetchall(
            "SELECT user_id, state, COUNT(*) AS n FROM jobs WHERE guild_id = ?"
            " AND created_at_ms >= ? AND created_at_ms < ? GROUP BY user_id, state",
            (guild_id, since_ms, until_ms),
        )
        found: dict[int, dict[JobState, int]] = {}
        for r in rows:
            found.setdefault(r["user_id"], {})[JobState(r["state"])] = r["n"]
        return found

    async def live_everywhere(self, limit: int = 25) -> list[Job]:
        """Jobs not yet finished in any guild, newest first (for bot owners)."""
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE state IN"
            " ('awaiting_approval', 'queued', 'submitted', 'running', 'succeeded', 'delivery_failed')"
            " ORDER BY created_at_ms DESC LIMIT ?",
            (limit,),
        )
        return [Job.from_row(r) for r in rows]

    async def events(self, job_id: str) -> list[JobEvent]:
        rows = await self._db.fetchall(
            "SELECT at_ms, from_state, to_state, detail FROM job_events WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [JobEvent(r["at_ms"], r["from_state"], r["to_state"], r["detail"]) for r in rows]

    async def count_by_state(self) -> dict[JobState, int]:
        rows = await self._db.fetchall("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(r["state"]): r["n"] for r in rows})
        return counts


async def _event(
    tx: Tx, job_id: str, at_ms: int, from_state: str | None, to_state: JobState, detail: str | None
) -> None:
    await tx.execute(
        "INSERT INTO job_events (job_id, at_ms, from_state, to_state, detail) VALUES (?,?,?,?,?)",
        (job_id, at_ms, from_state, to_state.value, detail),
    )


def _columns(changes: dict[str, Any]) -> dict[str, Any]:
    """Check settable fields; store `provider_data` as JSON."""
    if "provider_data" in changes:
        changes = dict(changes)
        changes["provider_data_json"] = json.dumps(changes.pop("provider_data"), sort_keys=True)
    _check_columns(changes)
    return changes


def _check_columns(changes: dict[str, Any]) -> None:
    unknown = set(changes) - MUTABLE_COLUMNS - {"provider_data_json"}
    if unknown:
        raise ValueError(f"not settable job fields: {sorted(unknown)}")

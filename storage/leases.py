"""Job leases: which process works on a job, when several share the database (issue 12).

A job the pipeline still works on (WORKED: at the provider, succeeded and being completed, a
delivery to retry, an expired job polled for a late result) belongs to the process named in its
`lease_owner` until `lease_until_ms`. The owner renews its leases while it lives (`heartbeat`); a
lease that lapsed (its process died) is taken over by another process (`take_over`), which then
resumes the job exactly as a restart does. A process that is not the owner asks the owner to look
at a job (`take_or_ask`, a webhook it received); the owner finds the request at its next heartbeat
(on PostgreSQL, a NOTIFY has it `collect_pokes` at once).

Leases are claimed with `FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite every write
transaction is exclusive (BEGIN IMMEDIATE), so plain SQL is already atomic across processes.

Every lease write reads the clock inside its transaction, once the database lets it write: a
write that waited (SQLite's file lock, a busy server) neither grants a lease that lapsed while it
waited nor counts the wait as lease time. A renewal renews only leases that have not lapsed (a
lapsed one may be another process's to take; its owner must take it again like anyone else), and
never shortens one. Before a step that must happen once (posting a clip), its owner `fence`s the
job: one conditional statement that it still holds a live lease on a job in the expected state,
extending it to cover the step. What records the step's outcome is conditional on the owner too
(JobStore.transition / update `held_by`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Tx
from storage.jobs import JobState

__all__ = ["POKE_CHANNEL", "Leases", "WorkedJobs"]

POKE_CHANNEL = "klingbot_lease_poke"  # NOTIFY payload: the lease owner asked to look

# Unfinished jobs that still need a process (what a restart resumes; one parameter: see
# WorkedJobs.params). An expired job is polled for a late result until its grace period ends.
WORKED = (
    "(state IN ('submitted', 'running', 'succeeded', 'delivery_failed')"
    " OR (state = 'expired' AND provider_job_id IS NOT NULL"
    "  AND COALESCE(finished_at_ms, updated_at_ms) >= ?))"
)


@dataclass(frozen=True)
class WorkedJobs:
    """The setting that says which unfinished jobs still need a process."""

    late_grace_ms: int

    def params(self, now_ms: int) -> tuple[int]:
        return (now_ms - self.late_grace_ms,)


class Leases:
    def __init__(self, db: Database, worked: WorkedJobs) -> None:
        self._db = db
        self._worked = worked
        # SQLite's two-argument MAX is PostgreSQL's GREATEST.
        self._greatest = "GREATEST" if db.dialect == "postgresql" else "MAX"

    async def heartbeat(self, owner: str, lease_ms: int) -> tuple[int, list[str]]:
        """Renew every live lease `owner` holds to `lease_ms` from now (one that lapsed stays
        lapsed; a longer one, a fence's, is kept); return how many, and the jobs another process
        asked it to look at (the requests are cleared)."""

        async def run(tx: Tx) -> tuple[int, list[str]]:
            now = self._db.clock.now_ms()
            renewed = await tx.execute(
                f"UPDATE jobs SET lease_until_ms = {self._greatest}(lease_until_ms, ?)"
                f" WHERE lease_owner = ? AND lease_until_ms >= ? AND {WORKED}",
                (now + lease_ms, owner, now, *self._worked.params(now)),
            )
            poked = await tx.fetchall(
                "UPDATE jobs SET lease_poke = 0 WHERE lease_owner = ? AND lease_poke = 1"
                " RETURNING id",
                (owner,),
            )
            return renewed, [row["id"] for row in poked]

        return await self._db.write(run)

    async def owners(self) -> list[str]:
        """The owners of leases that have not lapsed (to find those whose process is gone)."""
        now = self._db.clock.now_ms()
        rows = await self._db.fetchall(
            "SELECT DISTINCT lease_owner FROM jobs WHERE lease_owner IS NOT NULL"
            f" AND lease_until_ms >= ? AND {WORKED}",
            (now, *self._worked.params(now)),
        )
        return [row["lease_owner"] for row in rows]

    async def take_over(
        self,
        owner: str,
        lease_ms: int,
        *,
        dead: Collection[str] = (),
        own: bool = False,
        limit: int = 1000,
    ) -> list[str]:
        """Lease to `owner`, for `lease_ms` from now, up to `limit` worked jobs that have no live
        lease (none, lapsed, or held by one of `dead`; with `own`, also those `owner` holds
        already: a restart under the same id); return their ids."""
        lock = " FOR UPDATE SKIP LOCKED" if self._db.dialect == "postgresql" else ""

        async def run(tx: Tx) -> list[str]:
            now = self._db.clock.now_ms()
            free = ["lease_owner IS NULL", "lease_until_ms < ?"]
            params: list[Any] = [now]
            if own:
                free.append("lease_owner = ?")
                params.append(owner)
            if dead:
                free.append(f"lease_owner IN ({','.join('?' for _ in dead)})")
                params.extend(dead)
            rows = await tx.fetchall(
                "UPDATE jobs SET lease_owner = ?, lease_until_ms = ?, lease_poke = 0 WHERE id IN"
                f" (SELECT id FROM jobs WHERE {WORKED} AND ({' OR '.join(free)})"
                f" ORDER BY updated_at_ms LIMIT ?{lock}) RETURNING id",
                (owner, now + lease_ms, *self._worked.params(now), *params, limit),
            )
            return [row["id"] for row in rows]

        return await self._db.write(run)

    async def take(self, job_id: str, owner: str, lease_ms: int) -> str | None:
        """Lease one job to `owner`, for `lease_ms` from now, if it is worked and its lease is
        free, lapsed or `owner`'s already; return its lease owner afterwards (None: not a
        worked job)."""

        async def run(tx: Tx) -> str | None:
            now = self._db.clock.now_ms()
            taken = await tx.fetchone(
                "UPDATE jobs SET lease_owner = ?, lease_until_ms = ? WHERE id = ?"
                f" AND {WORKED} AND (lease_owner IS NULL OR lease_owner = ? OR lease_until_ms < ?)"
                " RETURNING lease_owner",
                (owner, now + lease_ms, job_id, *self._worked.params(now), owner, now),
            )
            if taken is not None:
                return str(taken["lease_owner"])
            row = await tx.fetchone(
                f"SELECT lease_owner FROM jobs WHERE id = ? AND {WORKED}",
                (job_id, *self._worked.params(now)),
            )
            return None if row is None else row["lease_owner"]

        return await self._db.write(run)

    async def fence(
        self, job_id: str, owner: str, lease_ms: int, states: Collection[JobState]
    ) -> bool:
        """Before a step that must happen once (posting a clip): whether `owner` still holds a
        live lease on the job and the job is in one of `states`, in one conditional statement
        that also extends the lease to at least `lease_ms` from now, long enough for the step.
        False: another process took the job over, or the lease lapsed (this process stalled;
        whoever takes the job next finishes it), or the job moved on (it was delivered)."""
        marks = ",".join("?" for _ in states) or "NULL"

        async def run(tx: Tx) -> bool:
            now = self._db.clock.now_ms()
            row = await tx.fetchone(
                f"UPDATE jobs SET lease_until_ms = {self._greatest}(lease_until_ms, ?)"
                " WHERE id = ? AND lease_owner = ? AND lease_until_ms >= ?"
                f" AND state IN ({marks}) RETURNING 1",
                (now + lease_ms, job_id, owner, now, *(s.value for s in states)),
            )
            return row is not None

        return await self._db.write(run)

    async def take_or_ask(self, job_id: str, owner: str, lease_ms: int) -> str | None:
        """`take` the job for `owner`; if another process holds it, ask that process to look
        at it (its next heartbeat finds the request; on PostgreSQL a NOTIFY wakes it at once,
        see `listen`), in the same transaction. Return the lease owner afterwards (None: not a
        worked job)."""

        free = "lease_owner IS NULL OR lease_owner = ? OR lease_until_ms < ?"
        update = (
            f"UPDATE jobs SET lease_poke = CASE WHEN {free} THEN lease_poke ELSE 1 END,"
            f" lease_until_ms = CASE WHEN {free} THEN ? ELSE lease_until_ms END,"
            f" lease_owner = CASE WHEN {free} THEN ? ELSE lease_owner END"
            f" WHERE id = ? AND {WORKED} RETURNING lease_owner"
        )

        def params(now: int) -> tuple[Any, ...]:
            return (
                *(owner, now),
                *(owner, now, now + lease_ms),
                *(owner, now, owner),
                job_id,
                *self._worked.params(now),
            )

        if self._db.dialect == "postgresql":
            # One statement, alone at READ COMMITTED: the UPDATE decides on the row's latest
            # version under its row lock, and the NOTIFY is sent when it commits.
            rows = await self._db.write_statement(
                f"WITH taken AS ({update}) SELECT lease_owner,"
                f" CASE WHEN lease_owner <> ? THEN pg_notify('{POKE_CHANNEL}', lease_owner)"
                " END AS asked FROM taken",
                (*params(self._db.clock.now_ms()), owner),
            )
            return str(rows[0]["lease_owner"]) if rows else None

        async def run(tx: Tx) -> str | None:  # SQLite: the clock read once the file is ours
            row = await tx.fetchone(update, params(self._db.clock.now_ms()))
            return None if row is None else str(row["lease_owner"])

        return await self._db.write(run)

    async def collect_pokes(self, owner: str) -> list[str]:
        """The jobs other processes asked `owner` to look at since it last looked (the requests
        are cleared): what a NOTIFY woke it for, without a whole heartbeat."""
        rows = await self._db.write_statement(
            "UPDATE jobs SET lease_poke = 0 WHERE lease_owner = ? AND lease_poke = 1 RETURNING id",
            (owner,),
        )
        return [row["id"] for row in rows]

    @contextlib.asynccontextmanager
    async def listen(self, owner: str, wake: Callable[[], None]) -> AsyncIterator[None]:
        """While open, call `wake()` when another process asks `owner` to look at a job
        (PostgreSQL LISTEN on a connection of its own; on SQLite nothing: the heartbeat finds
        the requests)."""
        if self._db.dialect != "postgresql":
            yield
            return

        def heard(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            if payload == owner:
                wake()

        async with self._db.connection() as conn:  # type: ignore[attr-defined]
            await conn.add_listener(POKE_CHANNEL, heard)
            try:
                yield
            finally:
                await conn.remove_listener(POKE_CHANNEL, heard)

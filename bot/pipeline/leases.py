"""This process's share of the jobs, when several processes share the database (issue 12).

Every job the pipeline works on after it leaves the queue is leased to one process
(storage.leases): the dispatcher claims it with this process's lease. The keeper renews this
process's leases every third of the lease time, takes over the jobs whose lease lapsed (their
process died) and resumes them exactly as a restart does (the tracker polls, recovers a lost
create, completes), and passes a webhook for a job another process works on to that process
(a flag on the job read at that process's next heartbeat; on PostgreSQL a NOTIFY has it read
the flags at once, without the rest of a heartbeat).
One process alone runs the same code; every lease is its own.

A process can stall (its renewal waits on SQLite's file lock or an unreachable server, a long
pause) past its leases. A renewal renews only the leases that are still live, so a lapsed lease
is lost for good: another process (or this one) must take the job again. A renewal that fails,
or comes back more than a lease after the previous one began, makes the keeper forget which jobs
it holds; from then on the database alone says. A step that must happen once (posting a clip)
runs only after `fence`: the database confirms, in one conditional statement, that this process
still holds a live lease on the job, and extends it to cover the step's timeout.

A process's id is `PipelineConfig.process_id` (KLINGBOT_PROCESS_ID), by default
`host:pid:random`. A lease held by an id of that form on this host whose process is gone (or by
an earlier process with this very pid) is taken over at once, so a restarted bot resumes its jobs
without waiting for its old leases to lapse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Collection

from bot.pipeline.events import EventBus, JobEvent
from bot.pipeline.scheduler import Scheduler
from bot.pipeline.waiting import Tally, wait_event
from storage import Clock, Job, JobState, Leases

log = logging.getLogger(__name__)

TAKE_OVER_BATCH = 1000
# The job no longer needs a process (or went back to the queue): not held here any more.
RELEASED = frozenset(
    {
        JobEvent.QUEUED,
        JobEvent.FAILOVER,
        JobEvent.DELIVERED,
        JobEvent.FAILED,
        JobEvent.CANCELLED,
        JobEvent.REJECTED,
    }
)


def default_process_id() -> str:
    """`host:pid:random`: unique per process, and tells this host's later processes whether the
    process is still alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def is_gone(owner: str, me: str) -> bool:
    """Whether `owner` names a process of this host that is no longer running (default ids
    only; any other id is judged by its lease's time alone)."""
    host, _, rest = owner.partition(":")
    pid_text, _, tag = rest.partition(":")
    if owner == me or host != socket.gethostname() or not pid_text.isdigit() or not tag:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # an earlier process that had this pid (a container restarted)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, but not ours to signal
    return False


class LeaseKeeper:
    def __init__(
        self,
        *,
        leases: Leases,
        clock: Clock,
        process_id: str,
        lease_s: float,
        scheduler: Scheduler,
        events: EventBus,
    ) -> None:
        self.owner = process_id
        self._leases = leases
        self._clock = clock
        self._lease_ms = int(lease_s * 1000)
        self._scheduler = scheduler
        self._held: set[str] = set()  # jobs this process works on, as far as it knows
        self._renewing_since_ms: int | None = None  # when the last good renewal began
        self._wake = asyncio.Event()
        self.beats = Tally()  # heartbeats done (tests, tools)
        self.taken_over = 0  # jobs taken over from a process that stopped renewing
        events.listen(RELEASED, lambda job, _event: self._held.discard(job.id))

    def until_ms(self) -> int:
        """When a lease taken or renewed now lapses."""
        return self._clock.now_ms() + self._lease_ms

    def claimed(self, job_id: str) -> None:
        """The dispatcher claimed `job_id` with this process's lease (committed)."""
        self._held.add(job_id)

    def holds(self, job_id: str) -> bool:
        return job_id in self._held

    async def resume(self) -> int:
        """At start: take the jobs no live process holds (this id's own included) and schedule
        them now, as a restart resumes them; return how many."""
        return await self._take_over(own=True)

    async def run(self) -> None:
        """The keeper loop (a task of the facade): a heartbeat every third of the lease time,
        and in between, when woken, only the jobs other processes asked it to look at."""
        interval_s = self._lease_ms / 3000
        loop = asyncio.get_running_loop()
        async with self._leases.listen(self.owner, self.wake):
            next_beat_s = loop.time() + interval_s
            while True:
                left_s = next_beat_s - loop.time()
                if left_s > 0 and await wait_event(self._wake, left_s):
                    self._wake.clear()
                    try:
                        self._look_at(await self._leases.collect_pokes(self.owner))
                    except Exception:
                        log.exception("collecting requests from other processes failed")
                    continue
                self._wake.clear()
                try:
                    await self.beat()
                except Exception:
                    log.exception("lease heartbeat failed")
                    self._forget("its lease renewal failed")
                finally:
                    self.beats.add()
                    next_beat_s = loop.time() + interval_s

    def wake(self) -> None:
        """Look now at the jobs other processes asked this one to (PostgreSQL NOTIFY)."""
        self._wake.set()

    def _look_at(self, poked: list[str]) -> None:
        for job_id in poked:
            self._held.add(job_id)
            self._scheduler.poke(job_id)

    async def beat(self) -> None:
        """Renew this process's leases, look at the jobs others asked it to, take over orphans."""
        began_ms = self._clock.now_ms()
        _, poked = await self._leases.heartbeat(self.owner, self._lease_ms)
        previous_ms, self._renewing_since_ms = self._renewing_since_ms, began_ms
        if previous_ms is not None and self._clock.now_ms() - previous_ms > self._lease_ms:
            self._forget("its lease renewal came back later than a lease after the one before")
        self._look_at(poked)
        taken = await self._take_over(own=False)
        if taken:
            self.taken_over += taken
            log.warning("took over %d jobs from a process that stopped renewing them", taken)

    def _forget(self, why: str) -> None:
        """Some of this process's leases may have lapsed: stop trusting what it knows it holds
        (the database says; every once-only step is fenced there anyway)."""
        if self._held:
            log.warning("%s: %d jobs may have lapsed to other processes", why, len(self._held))
        self._held.clear()

    async def _take_over(self, *, own: bool) -> int:
        dead = [o for o in await self._leases.owners() if is_gone(o, self.owner)]
        total = 0
        while True:
            ids = await self._leases.take_over(
                self.owner, self._lease_ms, dead=dead, own=own, limit=TAKE_OVER_BATCH
            )
            now = self._clock.now_ms()
            for job_id in ids:
                self._held.add(job_id)
                self._scheduler.schedule(job_id, now)
            total += len(ids)
            if len(ids) < TAKE_OVER_BATCH:
                return total

    async def working(self, job: Job) -> bool:
        """Whether this process may work on `job` now: its lease is this process's, or it was
        free (none, lapsed, its process gone) and is taken now."""
        now = self._clock.now_ms()
        if job.lease_owner == self.owner and (job.lease_until_ms or 0) >= now:
            self._held.add(job.id)
            return True
        if (
            job.lease_owner not in (None, self.owner)
            and (job.lease_until_ms or 0) >= now
            and not is_gone(job.lease_owner, self.owner)
        ):
            self._held.discard(job.id)
            return False
        owner = await self._leases.take(job.id, self.owner, self._lease_ms)
        if owner == self.owner:
            self._held.add(job.id)
            return True
        self._held.discard(job.id)
        return owner is None  # not a job that needs a lease (queued, final): as before

    async def fence(self, job_id: str, step_s: float, states: Collection[JobState]) -> bool:
        """Before a step that must happen once (posting a clip), bounded by `step_s`: whether
        this process still holds a live lease on `job_id` in one of `states`, the lease then
        extended to `step_s` plus a lease time from now (the margin: the outcome is recorded
        after the step). False (logged at info) if it lost the job: another process took it
        over, its lease lapsed while this process stalled, or it moved on; the job is left to
        whoever holds it."""
        step_ms = int(step_s * 1000) + self._lease_ms
        if await self._leases.fence(job_id, self.owner, step_ms, states):
            return True
        self._held.discard(job_id)
        log.info("job %s: this process no longer holds its lease; leaving it", job_id)
        return False

    async def route(self, job_id: str) -> None:
        """A webhook for `job_id` came here: look at it now if this process works on it (or
        can take it), else ask the process that does."""
        if job_id in self._held:
            self._scheduler.poke(job_id)
            return
        owner = await self._leases.take_or_ask(job_id, self.owner, self._lease_ms)
        if owner is None or owner == self.owner:
            if owner is not None:
                self._held.add(job_id)
            self._scheduler.poke(job_id)

"""Job events: how stages wake each other and how front ends watch jobs, without knowing each other.

Two kinds of subscriber:
- listeners (`listen`): plain callables run inline when the event is published, for cheap
  cross-stage wake-ups (the dispatcher listens for "a slot or a place in line may be free");
- observers (`subscribe`): async front ends (Discord status messages, the CLI progress bar), each
  call run in a background task so a slow or failing observer never holds up the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Protocol

from storage import Job

log = logging.getLogger(__name__)


class JobEvent(StrEnum):
    """What happened to a job. A StrEnum, so it prints and compares as its value."""

    QUEUED = "queued"
    APPROVED = "approved"
    REJECTED = "rejected"
    POSITION = "position"  # the queue moved; the job has a new place in line
    SUBMITTED = "submitted"
    RUNNING = "running"
    PROGRESS = "progress"
    FAILOVER = "failover"
    OUTCOME_UNKNOWN = "outcome_unknown"  # its create's answer was lost and cannot be recovered
    SUCCEEDED = "succeeded"
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# A job left the provider or the queue: a create slot or a member's live allowance may be free.
SLOT_EVENTS = frozenset(
    {
        JobEvent.QUEUED,
        JobEvent.APPROVED,
        JobEvent.FAILOVER,
        JobEvent.SUCCEEDED,
        JobEvent.FAILED,
        JobEvent.CANCELLED,
        JobEvent.EXPIRED,
    }
)


class JobObserver(Protocol):
    async def job_changed(self, job: Job, event: JobEvent) -> None:
        """Called after `event` happened to `job` (the job as it was right after)."""


Listener = Callable[[Job, JobEvent], None]


class EventBus:
    """Publishes job events to inline listeners and to async observers."""

    def __init__(self, observers: Iterable[JobObserver] = ()) -> None:
        self._observers: list[JobObserver] = list(observers)
        self._listeners: list[tuple[frozenset[JobEvent], Listener]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def listen(self, events: Iterable[JobEvent], listener: Listener) -> None:
        """Run `listener(job, event)` inline for each of `events` (keep it cheap; no awaits)."""
        self._listeners.append((frozenset(events), listener))

    def subscribe(self, observer: JobObserver) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: JobObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def publish(self, job: Job, event: JobEvent) -> None:
        for wanted, listener in self._listeners:
            if event in wanted:
                try:
                    listener(job, event)
                except Exception:
                    log.exception("listener %r failed on %s for job %s", listener, event, job.id)
        for observer in list(self._observers):
            task = asyncio.get_running_loop().create_task(self._call(observer, job, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, observer: JobObserver, job: Job, event: JobEvent) -> None:
        try:
            await observer.job_changed(job, event)
        except Exception:
            log.exception("observer %r failed on %s for job %s", observer, event, job.id)

    async def drain(self) -> None:
        """Wait for pending observer calls (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

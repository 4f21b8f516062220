"""Job change notifications: front ends (Discord status messages, the CLI progress bar) observe
jobs without the pipeline knowing about them. An observer's failure never stops the pipeline."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from storage import Job

log = logging.getLogger(__name__)


class JobObserver(Protocol):
    async def job_changed(self, job: Job, event: str) -> None:
        """`event` names what happened: queued, submitted, progress, succeeded, delivered, ..."""


class Notifier:
    """Fans job changes out to observers in background tasks."""

    def __init__(self) -> None:
        self._observers: list[JobObserver] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(self, observer: JobObserver) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: JobObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def publish(self, job: Job, event: str) -> None:
        for observer in list(self._observers):
            task = asyncio.get_running_loop().create_task(self._call(observer, job, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, observer: JobObserver, job: Job, event: str) -> None:
        try:
            await observer.job_changed(job, event)
        except Exception:
            log.exception("observer %r failed on %s for job %s", observer, event, job.id)

    async def drain(self) -> None:
        """Wait for pending notifications (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

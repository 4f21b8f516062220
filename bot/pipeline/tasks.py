"""Background tasks that the pipeline keeps track of, so shutdown can wait for them or cancel them
and a failure is logged instead of vanishing with a garbage-collected task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return sum(1 for task in self._tasks if not task.done())

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self, *, grace_s: float) -> None:
        """Let running tasks finish for `grace_s`, then cancel the rest."""
        pending = [t for t in self._tasks if not t.done()]
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=grace_s)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)

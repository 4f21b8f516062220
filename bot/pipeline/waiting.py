"""Waiting on an event with a timeout, without losing a cancellation; and counts of work done
that a watcher can wait on.

`asyncio.wait_for` in Python 3.11 can swallow a task's cancellation when the awaited event is set
at the same moment; `asyncio.timeout` does not.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passes; True if it was set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Tally:
    """A count of something done (dispatch rounds, job checks). Waiting for it to pass a value
    is a positive sign that the moment has passed (tests, tools)."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def past(self, count: int) -> int:
        """Wait until the count is above `count`; return it."""
        while self.count <= count:
            await self._changed.wait()
        return self.count

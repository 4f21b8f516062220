"""Waiting on an event with a timeout, without losing a cancellation.

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

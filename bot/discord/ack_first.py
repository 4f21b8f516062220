"""Acknowledgements before follow-on work.

Discord gives an interaction 3 seconds to be acknowledged; what follows (checks, the hold, the
receipt) may take longer. When many members invoke at once, the work of those already
acknowledged would otherwise interleave on the event loop with the acknowledgements still to
send. Commands that defer take part: the work after a defer waits until no acknowledgement is
in flight, or at most `max_wait_s` so that a steady stream of invocations cannot starve it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class AckFirst:
    def __init__(self, max_wait_s: float = 0.5) -> None:
        self.max_wait_s = max_wait_s
        self._in_flight = 0
        self._waiting = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Work held back right now (in `wait_turn`)."""
        return self._waiting

    @contextlib.asynccontextmanager
    async def acknowledging(self) -> AsyncIterator[None]:
        """Count an acknowledgement as in flight while the block runs."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def wait_turn(self) -> None:
        """Return once no acknowledgement is in flight (or after `max_wait_s`)."""
        if self._idle.is_set():
            return
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.max_wait_s)
        finally:
            self._waiting -= 1

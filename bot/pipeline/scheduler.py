"""Runs a callback for each key when it comes due: the pipeline's one timer loop.

One task sleeps until the earliest due time (never longer than `max_sleep_s`, so a clock that
jumps forward in tests is noticed) or until woken. `poke(key)` makes a key due now (a webhook hint).
A key never runs twice at once: a poke while it runs makes it run once more afterwards. At most
`concurrency` callbacks run at a time. Memory is one heap entry and one dict entry per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable

from bot.pipeline.waiting import Tally, wait_event
from storage import Clock

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        *,
        clock: Clock,
        concurrency: int = 16,
        max_sleep_s: float = 1.0,
        name: str = "scheduler",
    ) -> None:
        self._callback: Callable[[str], Awaitable[None]] | None = None
        self._clock = clock
        self._concurrency = concurrency
        self._max_sleep_s = max_sleep_s
        self._name = name
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.passes = Tally()  # passes of the loop over what is due
        self.done = Tally()  # callbacks finished

    def __len__(self) -> int:
        return len(self._due)

    @property
    def running(self) -> int:
        return len(self._running)

    def due_at(self, key: str) -> int | None:
        return self._due.get(key)

    def schedule(self, key: str, due_ms: int) -> None:
        """Run `key` at `due_ms` (replacing any earlier schedule of it)."""
        self._due[key] = due_ms
        heapq.heappush(self._heap, (due_ms, next(self._seq), key))
        if self._heap[0][2] == key:
            self._wake.set()

    def poke(self, key: str) -> None:
        """Run `key` as soon as possible, ahead of anything merely overdue."""
        if key in self._running:
            self._again.add(key)
            return
        self.schedule(key, 0)

    def discard(self, key: str) -> None:
        self._due.pop(key, None)
        self._again.discard(key)

    def start(self, callback: Callable[[str], Awaitable[None]]) -> None:
        """Start calling `callback(key)` for keys as they come due."""
        self._callback = callback
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Stop the loop and cancel running callbacks."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            now = self._clock.now_ms()
            while self._heap and self._heap[0][0] <= now and len(self._running) < self._concurrency:
                due, _, key = heapq.heappop(self._heap)
                if self._due.get(key) != due:
                    continue  # stale entry: rescheduled or discarded since
                del self._due[key]
                if key in self._running:
                    self._again.add(key)
                    continue
                self._running[key] = asyncio.get_running_loop().create_task(
                    self._call(key), name=f"{self._name}:{key}"
                )
            self.passes.add()
            if self._heap and len(self._running) < self._concurrency:
                sleep_s = min(self._max_sleep_s, max(0.0, (self._heap[0][0] - now) / 1000))
            else:
                sleep_s = self._max_sleep_s
            self._wake.clear()
            await wait_event(self._wake, sleep_s)

    async def _call(self, key: str) -> None:
        assert self._callback is not None
        try:
            await self._callback(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: callback for %s failed", self._name, key)
        finally:
            self._running.pop(key, None)
            if key in self._again:
                self._again.discard(key)
                self.schedule(key, self._clock.now_ms())
            self._wake.set()
            self.done.add()

    async def settle_due(self) -> None:
        """Wait until what is due now (pokes included) has been run to its end, and nothing
        runs: a positive sign that whatever was asked for by now has happened (tests, tools)."""
        while True:
            start = self.passes.count
            self._wake.set()
            await self.passes.past(start)  # a pass that began after this point
            if not self._running:
                return
            while self._running:
                await self.done.past(self.done.count)

"""Keeps the garbage collector's pauses short on a long-running bot.

Python's cyclic collector now and then scans every object it tracks (a full collection); with the
heap of a bot that has run a while (discord.py's caches, the pipeline's jobs) that pauses the
event loop for tens of milliseconds, delaying every webhook and interaction in flight. The
pacer collects once and freezes what survives (`gc.freeze`): later collections skip those
objects. It does so at start-up and then every `every_s`; each time it first unfreezes, so an
object frozen earlier that has since become garbage in a reference cycle is freed one period
later at most. Objects without cycles are freed at once as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

log = logging.getLogger(__name__)

REFREEZE_EVERY_S = 600.0


class GcPacer:
    def __init__(self, every_s: float = REFREEZE_EVERY_S) -> None:
        self.every_s = every_s
        self._task: asyncio.Task[None] | None = None

    def refreeze(self) -> float:
        """Unfreeze, collect everything, freeze the survivors; return the pause in seconds."""
        started = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        pause_s = time.perf_counter() - started
        log.debug("gc refreeze: %.1f ms, %d objects frozen", pause_s * 1000, gc.get_freeze_count())
        return pause_s

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gc-pacer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self.refreeze()

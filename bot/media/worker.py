"""Runs re-encodes in worker processes, at most `concurrency` at once, off the event loop.

A re-encode is seconds of CPU. In a thread of the bot's process it would share the bot's GIL
and its scheduling priority; here it runs in a process of its own (forkserver, so nothing of the
bot's threads or sockets is inherited) at a lower priority (`WORKER_NICE`), so on a small
machine the event loop wins the CPU whenever it has work. The workers start on the first
re-encode and are kept for the next ones; a worker that dies (killed, out of memory) costs only
its clip, which fails with MediaError, and the next re-encode gets a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.media.errors import MediaError
from bot.media.probe import MediaInfo
from bot.media.transcode import shrink_to_fit

log = logging.getLogger(__name__)

WORKER_NICE = 10  # added to the workers' niceness: the bot's event loop comes first


@dataclass(frozen=True)
class Shrunk:
    """A finished re-encode: the result and what it cost in the worker."""

    info: MediaInfo
    cpu_s: float  # CPU seconds of the worker process (all its threads) for this clip
    pid: int  # the worker process
    started_ns: int  # time.monotonic_ns() in the worker when it began, and when it ended
    ended_ns: int


class Transcoder:
    """`shrink_to_fit` in worker processes: at most `concurrency` clips at once (the others
    wait their turn, in order), each off the event loop."""

    def __init__(self, concurrency: int = 1) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self.running = 0  # clips being re-encoded now (after their turn came)
        self.peak_running = 0
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._in_flight: set[Path] = set()  # destinations being written by a worker
        # One semaphore per event loop (the bot has one; tests start many).
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._slots = weakref.WeakKeyDictionary()

    async def shrink(
        self,
        src: Path,
        dst: Path,
        *,
        max_bytes: int,
        on_start: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> Shrunk:
        """Run `shrink_to_fit(src, dst, max_bytes=...)` in a worker when a slot is free.

        `on_start` is awaited when the clip's turn comes, beside the re-encode (not before it);
        its errors are logged and do not stop the re-encode. Raises what `shrink_to_fit`
        raises; MediaError if the worker died.
        """
        async with self._slot():
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            hook = asyncio.create_task(on_start()) if on_start is not None else None
            try:
                pool = self._executor()
                future = pool.submit(_shrink_in_worker, src, dst, max_bytes)
                with self._lock:
                    self._in_flight.add(dst)
                future.add_done_callback(lambda _: self._done(dst))
                try:
                    return await asyncio.wrap_future(future)
                except BrokenProcessPool as error:
                    self._discard(pool)
                    _remove_leftovers(dst)
                    raise MediaError(f"the re-encoder of {src.name} stopped: {error}") from error
            finally:
                self.running -= 1
                if hook is not None:
                    await _settle(hook, src)

    def worker_pids(self) -> list[int]:
        """The worker processes running now (none before the first re-encode)."""
        pool = self._pool
        if pool is None:
            return []
        return [p.pid for p in (pool._processes or {}).values() if p.pid is not None]

    def close(self) -> None:
        """Stop the workers now. A clip being re-encoded is abandoned: its temporary files are
        removed and its destination is left as it was (the next start re-encodes it)."""
        with self._lock:
            pool, self._pool = self._pool, None
            in_flight = list(self._in_flight)
        if pool is None:
            return
        # (Python 3.14 has terminate_workers(); shutdown() forgets the processes.)
        processes = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        for dst in in_flight:
            _remove_leftovers(dst)

    def _done(self, dst: Path) -> None:
        with self._lock:
            self._in_flight.discard(dst)

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.concurrency)
        return slots

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.concurrency,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_lower_priority,
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)


async def _settle(hook: asyncio.Task[None], src: Path) -> None:
    """Wait for the `on_start` hook; log (not raise) its failure."""
    try:
        await hook
    except Exception:
        log.warning("the start hook of the re-encode of %s failed", src.name, exc_info=True)


def _remove_leftovers(dst: Path) -> None:
    """The temporary files a killed worker left beside `dst` (never `dst` itself)."""
    for leftover in dst.parent.glob(f".{dst.name}.*"):
        leftover.unlink(missing_ok=True)


def _lower_priority() -> None:
    os.nice(WORKER_NICE)
    # Ctrl-C in a terminal reaches the whole process group: the bot stops its workers itself,
    # so a worker must not die of it (with a traceback) under a bot that is shutting down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _shrink_in_worker(src: Path, dst: Path, max_bytes: int) -> Shrunk:
    started_ns = time.monotonic_ns()
    before = os.times()
    info = shrink_to_fit(src, dst, max_bytes=max_bytes)
    after = os.times()
    cpu_s = after.user + after.system - before.user - before.system
    return Shrunk(info, cpu_s, os.getpid(), started_ns, time.monotonic_ns())

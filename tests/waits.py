"""Waiting in tests for something to happen, on a signal, never on a clock: re-check a condition
each time the database commits, or each time a count of work done (a `Tally`) moves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.pipeline.waiting import Tally
from storage import Database

T = TypeVar("T")


async def until_stored(
    db: Database, check: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str
) -> T:
    """The first truthy value of `check()`, run now and again after every commit."""

    async def watch() -> T:
        while True:
            seen = db.commits
            if found := await check():
                return found
            await db.next_commit(seen)

    try:
        async with asyncio.timeout(timeout_s):
            return await watch()
    except TimeoutError:
        raise AssertionError(f"{what} (not within {timeout_s} s)") from None


async def until_counted(
    tally: Tally, check: Callable[[], bool], *, timeout_s: float, what: str
) -> None:
    """Return once `check()` holds, checking now and again each time `tally` moves."""

    async def watch() -> None:
        while True:
            seen = tally.count
            if check():
                return
            await tally.past(seen)

    try:
        async with asyncio.timeout(timeout_s):
            await watch()
    except TimeoutError:
        raise AssertionError(f"{what} (not within {timeout_s} s)") from None

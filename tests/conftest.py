"""Shared fixtures: a real database (SQLite in a temporary directory; PostgreSQL too in the
modules marked `both_backends`), a manual clock, and a loopback endpoint that records the
callbacks a provider double sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp.web
import pytest

from storage import Database, GuildPolicy, JobStore, Ledger, ManualClock
from tests.backends import default_backend, open_database


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend() -> str:
    """The storage backend under test; `tests.backends.both_backends` runs a module on both."""
    return default_backend()


@pytest.fixture
async def db(tmp_path: Path, clock: ManualClock, backend: str) -> AsyncIterator[Database]:
    async with open_database(backend, tmp_path, clock) as database:
        yield database


@pytest.fixture
def ledger(db: Database) -> Ledger:
    return Ledger(db)


@pytest.fixture
def jobs(db: Database) -> JobStore:
    return JobStore(db)


@pytest.fixture
def policy(db: Database) -> GuildPolicy:
    return GuildPolicy(db)


Received = list[tuple[dict[str, str], bytes]]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, Received]]:
    """A plain aiohttp endpoint on 127.0.0.1 that stores what it receives."""
    received: Received = []

    async def handle(request: aiohttp.web.Request) -> aiohttp.web.Response:
        received.append((dict(request.headers), await request.read()))
        return aiohttp.web.Response(text="ok")

    app = aiohttp.web.Application()
    app.router.add_post("/hook", handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook", received
    await runner.cleanup()

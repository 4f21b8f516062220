"""Pacing the bot's messages: Discord's rate limits respected before Discord has to enforce them.

Every message the bot posts or edits in a channel (status messages, clips, log posts) goes
through one `Pacer`. Per channel it keeps at most `count` requests live in Discord's window (a
request is live while in flight and for a window after its answer, so any `count + 1` of them
reach Discord at least a window apart, whatever the network delays), and across channels it keeps
a global budget below Discord's 50 requests per second. Status edits are coalesced per job: a
pending edit is replaced by a newer one (the edit reads the job when it is sent, so the latest
state wins) and final states go first. The limits start at Discord's documented values and follow
the `X-RateLimit-*` headers discord.py receives (seen through an aiohttp trace): a channel's
limit and window, an exhausted bucket, a 429. Requests the pacer did not send (interaction
responses excepted, which Discord does not count) still count against the limits.

What may be sent and when is decided by `Schedule` (bot/discord/rate_limits.py, pure); `Pacer`
runs it on the event loop and watches discord.py's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp

from bot.discord.rate_limits import PacingLimits, Priority, Schedule, parse_ratelimit_headers

log = logging.getLogger(__name__)

T = TypeVar("T")

# A message post or edit in a channel: Discord's bucket for these is per channel (deleting and
# reading messages have buckets of their own).
POST_ROUTE = re.compile(r"/api/v\d+/channels/(\d+)/messages")
EDIT_ROUTE = re.compile(r"/api/v\d+/channels/(\d+)/messages/\d+")
API_ROUTE = re.compile(r"/api/v\d+/")
# Interaction responses and followups are not bound to the global limit.
EXEMPT_ROUTE = re.compile(r"/api/v\d+/(?:interactions|webhooks)/")


class PacerClosed(RuntimeError):
    """A request was still waiting for its turn when the bot shut down."""


def message_channel(method: str, path: str) -> int | None:
    """The channel of a message post or edit (the requests the channel's gauge counts)."""
    route = {"POST": POST_ROUTE, "PATCH": EDIT_ROUTE}.get(method.upper())
    found = None if route is None else route.fullmatch(path)
    return None if found is None else int(found[1])


Work = Callable[[], Awaitable[object]]


@dataclass
class _Sending:
    """What one paced request did: set in the task that runs it, read by the trace."""

    requests: int = 0


_sending: contextvars.ContextVar[_Sending | None] = contextvars.ContextVar(
    "klingbot_pacer_sending", default=None
)


class _Grant:
    """A one-off request waiting for its turn (`Pacer.send`)."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


class Pacer:
    """Runs a `Schedule` on the event loop: sends requests when the limits allow."""

    def __init__(self, limits: PacingLimits | None = None) -> None:
        self.limits = limits or PacingLimits()
        self.schedule: Schedule[Work | _Grant] = Schedule(self.limits)
        self.sent = 0  # requests that went out through the pacer
        self._wake = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._closed = False

    # -- what the bot calls -------------------------------------------------------------------

    def update(
        self,
        channel_id: int,
        key: Hashable,
        work: Work,
        *,
        priority: Priority,
        delay_s: float = 0.0,
    ) -> None:
        """Run `work` (which sends at most one request in the channel) when the limits allow,
        and not before `delay_s`; a newer `work` for the same key replaces a waiting one."""
        if self._closed:
            return
        ready_at = self._now() + delay_s if delay_s > 0 else 0.0
        self.schedule.offer(channel_id, ("update", key), work, priority, ready_at=ready_at)
        self._kick()

    async def send(
        self, channel_id: int, work: Callable[[], Awaitable[T]], *, priority: Priority
    ) -> T:
        """Wait for room in the channel's limits, then run `work` (one request) and return its
        result (its exception is raised here)."""
        if self._closed:
            raise PacerClosed("the bot is shutting down")
        grant = _Grant(asyncio.get_running_loop().create_future())
        key = ("send", id(grant))
        self.schedule.offer(channel_id, key, grant, priority)
        self._kick()
        try:
            await grant.future
        except asyncio.CancelledError:
            if grant.future.done() and not grant.future.cancelled():
                self._finished(channel_id, key, sent=False)  # its turn came too late
            else:
                self.schedule.withdraw(channel_id, key)
            raise
        return await self._run(channel_id, key, work)

    async def wait_idle(self) -> None:
        """Wait until nothing is in flight and nothing waiting is due (edits held back by a
        job's edit interval may still wait)."""
        while self.schedule.busy(self._now()):
            self._idle.clear()
            self._kick()
            await self._idle.wait()

    async def close(self, grace_s: float = 3.0) -> None:
        """Send what is due (for up to `grace_s`), then stop; one-offs still waiting fail with
        PacerClosed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_idle(), grace_s)
        self._closed = True
        for payload in self.schedule.drop_waiting():
            if isinstance(payload, _Grant) and not payload.future.done():
                payload.future.set_exception(PacerClosed("the bot is shutting down"))
        tasks = [*self._tasks, *([self._driver] if self._driver else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._driver = None

    # -- watching discord.py's requests ------------------------------------------------------

    def trace_config(self) -> aiohttp.TraceConfig:
        """Give this to discord.py (`http_trace=`) so that the pacer sees every request."""
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_request_start)
        trace.on_request_end.append(self._on_request_end)
        trace.on_request_exception.append(self._on_request_exception)
        return trace

    async def _on_request_start(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        path = params.url.path
        if not API_ROUTE.match(path) or EXEMPT_ROUTE.match(path):
            return
        sending = _sending.get()
        if sending is not None:
            sending.requests += 1
            return
        # Not sent by the pacer: it cannot wait, but it counts.
        channel_id = message_channel(params.method, path)
        context.klingbot_unpaced = channel_id or 0
        self.schedule.global_gauge.start()
        if channel_id:
            self.schedule.gauge(channel_id).start()

    async def _on_request_end(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        path = params.url.path
        if API_ROUTE.match(path) and not EXEMPT_ROUTE.match(path):
            self.observe(params.method, path, params.response.status, params.response.headers)
        self._unpaced_done(context)

    async def _on_request_exception(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        self._unpaced_done(context)

    def _unpaced_done(self, context: SimpleNamespace) -> None:
        channel_id = getattr(context, "klingbot_unpaced", None)
        if channel_id is None:
            return
        now = self._now()
        self.schedule.global_gauge.finish(now)
        if channel_id:
            self.schedule.gauge(channel_id).finish(now)
        self._kick()

    def observe(self, method: str, path: str, status: int, headers: Mapping[str, str]) -> None:
        """Learn from an answer of Discord's to a request (paced or not)."""
        info = parse_ratelimit_headers(headers)
        now = self._now()
        channel_id = message_channel(method, path)
        if status == 429 and info.retry_after_s is not None:
            log.warning("Discord answered 429 to %s %s (%s)", method, path, info.scope or "?")
            until = now + info.retry_after_s + self.limits.margin_s
            if info.is_global or info.scope == "global":
                self.schedule.global_gauge.block(until)
            elif channel_id:
                self.schedule.gauge(channel_id).block(until)
        elif channel_id:
            self.schedule.gauge(channel_id).learn(info, now)
        self._kick()

    # -- the loop ----------------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _kick(self) -> None:
        self._wake.set()
        if self._driver is None and not self._closed:
            self._driver = asyncio.get_running_loop().create_task(self._drive(), name="pacer")
            self._driver.add_done_callback(self._driver_stopped)

    def _driver_stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "the pacer stopped; it starts again with the next request",
                exc_info=task.exception(),
            )
        if self._driver is task:
            self._driver = None

    async def _drive(self) -> None:
        while True:
            self._wake.clear()
            now = self._now()
            for channel_id, key, payload in self.schedule.due(now):
                self._start(channel_id, key, payload)
            if not self.schedule.busy(now):
                self._idle.set()
            next_at = self.schedule.next_at(now)
            timeout = None if next_at is None else max(0.0, next_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _start(self, channel_id: int, key: Hashable, payload: Work | _Grant) -> None:
        if isinstance(payload, _Grant):
            if payload.future.cancelled():
                self._finished(channel_id, key, sent=False)
            else:
                payload.future.set_result(None)
            return
        task = asyncio.get_running_loop().create_task(self._run_update(channel_id, key, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_update(self, channel_id: int, key: Hashable, work: Work) -> None:
        try:
            await self._run(channel_id, key, work)
        except Exception:
            log.exception("a paced request in channel %s failed", channel_id)

    async def _run(self, channel_id: int, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        sending = _Sending()
        token = _sending.set(sending)
        try:
            return await work()
        finally:
            _sending.reset(token)
            self.sent += sending.requests
            self._finished(channel_id, key, sent=sending.requests > 0)

    def _finished(self, channel_id: int, key: Hashable, *, sent: bool) -> None:
        self.schedule.finished(channel_id, key, self._now(), sent=sent)
        self._kick()

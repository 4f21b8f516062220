"""Discord's rate limits, enforced (opt-in): per-route buckets and the global limit.

Discord counts each route's requests per top-level resource (for messages: per channel) in fixed
windows that open with the first request and reset ``period_s`` later, and all of a bot's
requests against one global limit, interaction endpoints excepted
(https://discord.com/developers/docs/topics/rate-limits). Over a limit it answers 429 with
``retry_after``, which discord.py honours. Create and edit message report the same
``X-RateLimit-Bucket`` but are counted apart (discord/discord-api-docs#1442); the double does
the same, so a client that trusts the bucket hash alone stays on the safe side.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace

from .model import Clock
from .wire import ApiError

MESSAGES_BUCKET = "80c17d2f203122d936070c88c8d10f33"
DELETE_BUCKET = "7e8d4b1a9d1c5c3e2f60a1b2c3d4e5f6"


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests per ``period_s``."""

    count: int
    period_s: float


@dataclass(frozen=True)
class RouteLimit:
    """Requests matching ``method`` and ``path`` (a regex over the path below ``/api/v10`` whose
    ``major`` group is the top-level resource) share one counter per major id."""

    name: str
    method: str
    path: str
    limit: Limit
    bucket: str

    def major(self, method: str, path: str) -> str | None:
        if method != self.method:
            return None
        found = re.fullmatch(self.path, path)
        return None if found is None else found["major"]


@dataclass(frozen=True)
class RateLimits:
    """The limits the double enforces; requests under ``exempt`` prefixes skip the global one."""

    routes: tuple[RouteLimit, ...]
    global_limit: Limit | None
    exempt: tuple[str, ...] = ("/interactions/", "/webhooks/")

    def faster(self, factor: float) -> RateLimits:
        """The same counts with every window ``factor`` times shorter (tests see minutes in
        seconds)."""
        if factor <= 0:
            raise ValueError("factor must be positive")
        routes = tuple(
            replace(r, limit=Limit(r.limit.count, r.limit.period_s / factor)) for r in self.routes
        )
        limit = self.global_limit
        scaled = None if limit is None else Limit(limit.count, limit.period_s / factor)
        return replace(self, routes=routes, global_limit=scaled)

    def with_global(self, limit: Limit | None) -> RateLimits:
        return replace(self, global_limit=limit)


# Discord's limits for the routes a bot posts and edits with. Discord does not publish them (it
# asks clients to read the headers); these are the values its headers report.
DISCORD_RATE_LIMITS = RateLimits(
    routes=(
        RouteLimit(
            "create message",
            "POST",
            r"/channels/(?P<major>\d+)/messages",
            Limit(5, 5.0),
            MESSAGES_BUCKET,
        ),
        RouteLimit(
            "edit message",
            "PATCH",
            r"/channels/(?P<major>\d+)/messages/\d+",
            Limit(5, 5.0),
            MESSAGES_BUCKET,
        ),
        RouteLimit(
            "delete message",
            "DELETE",
            r"/channels/(?P<major>\d+)/messages/\d+",
            Limit(5, 1.0),
            DELETE_BUCKET,
        ),
    ),
    global_limit=Limit(50, 1.0),
)


@dataclass
class _Window:
    """One fixed window: opens with its first request, resets ``period_s`` later."""

    remaining: int = 0
    reset_at: float = 0.0

    def admit(self, limit: Limit, now: float) -> bool:
        if now >= self.reset_at:
            self.remaining, self.reset_at = limit.count, now + limit.period_s
        return self.remaining > 0


@dataclass
class RateLimiter:
    """Counts requests against ``limits``; answers 429 the way Discord does when one is over."""

    limits: RateLimits
    clock: Clock
    _routes: dict[tuple[int, str], _Window] = field(default_factory=dict)
    _global: _Window = field(default_factory=_Window)

    def admit(self, method: str, path: str) -> dict[str, str] | None:
        """Count the request, or raise a 429 :class:`ApiError`; the headers to answer with when
        the route has a bucket (None: it has none)."""
        now = self.clock.now()
        route_window: tuple[RouteLimit, _Window] | None = None
        for index, route in enumerate(self.limits.routes):
            major = route.major(method, path)
            if major is not None:
                window = self._routes.setdefault((index, major), _Window())
                route_window = (route, window)
                break
        limit = self.limits.global_limit
        counts_globally = limit is not None and not path.startswith(self.limits.exempt)
        if counts_globally and limit is not None and not self._global.admit(limit, now):
            raise _too_many(self._global.reset_at - now, scope="global")
        if route_window is not None:
            route, window = route_window
            if not window.admit(route.limit, now):
                retry_after = window.reset_at - now
                headers = _bucket_headers(route, window, now)
                raise _too_many(retry_after, scope="user", headers=headers)
            window.remaining -= 1
        if counts_globally:
            self._global.remaining -= 1
        return None if route_window is None else _bucket_headers(*route_window, now)


def _bucket_headers(route: RouteLimit, window: _Window, now: float) -> dict[str, str]:
    reset_after = max(0.0, window.reset_at - now)
    return {
        "X-RateLimit-Limit": str(route.limit.count),
        "X-RateLimit-Remaining": str(window.remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": route.bucket,
    }


def _too_many(
    retry_after_s: float, *, scope: str, headers: dict[str, str] | None = None
) -> ApiError:
    out = dict(headers or {})
    out.update(
        {
            "Retry-After": str(max(1, math.ceil(retry_after_s))),
            "X-RateLimit-Scope": scope,
            "Via": "1.1 google",  # discord.py treats a 429 without Via as a Cloudflare ban
        }
    )
    is_global = scope == "global"
    if is_global:
        out["X-RateLimit-Global"] = "true"
    return ApiError(
        429,
        0,
        "You are being rate limited.",
        headers=out,
        extra={"retry_after": math.ceil(retry_after_s * 1000) / 1000, "global": is_global},
    )

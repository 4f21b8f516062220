"""Failure injection and Discord's rate-limit headers."""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass

from .wire import ApiError

_DEFAULTS: dict[int, tuple[int, str]] = {
    400: (50035, "Invalid Form Body"),
    401: (0, "401: Unauthorized"),
    403: (50013, "Missing Permissions"),
    404: (10003, "Unknown Channel"),
    413: (40005, "Request entity too large"),
    429: (0, "You are being rate limited."),
    500: (0, "500: Internal Server Error"),
    502: (0, "502: Bad Gateway"),
    503: (0, "503: Service Unavailable"),
}


@dataclass
class Fault:
    """A pending injected failure for requests matching ``method`` and ``pattern``."""

    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    message: str
    times: int
    retry_after_s: float
    scope: str
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.times > 0 and self.method in ("*", method) and bool(self.pattern.fullmatch(path))
        )

    def error(self, path: str) -> ApiError:
        """The error to answer; a 429 looks exactly like Discord's so clients retry by themselves."""
        if self.status != 429:
            return ApiError(self.status, self.code, self.message)
        is_global = self.scope == "global"
        headers = ratelimit_headers(path, remaining=0, reset_after=self.retry_after_s)
        headers.update(
            {
                "Retry-After": str(max(1, math.ceil(self.retry_after_s))),
                "X-RateLimit-Scope": self.scope,
                # discord.py treats a 429 without Via as a Cloudflare ban and does not retry.
                "Via": "1.1 google",
            }
        )
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        extra = {"retry_after": self.retry_after_s, "global": is_global}
        return ApiError(429, self.code, self.message, headers=headers, extra=extra)


class FaultInjector:
    """Holds faults; the first matching one with ``times`` left answers the request."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(
        self,
        method: str,
        path_regex: str,
        *,
        status: int,
        code: int | None = None,
        message: str | None = None,
        times: int = 1,
        retry_after_s: float = 0.5,
        scope: str = "user",
    ) -> Fault:
        default_code, default_message = _DEFAULTS.get(status, (0, f"{status}: Error"))
        fault = Fault(
            method=method.upper(),
            pattern=re.compile(path_regex),
            status=status,
            code=default_code if code is None else code,
            message=default_message if message is None else message,
            times=times,
            retry_after_s=retry_after_s,
            scope=scope,
        )
        self.faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first fault matching this request."""
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                fault.hits += 1
                return fault
        return None


def bucket_for(path: str) -> str:
    """A stable per-route bucket hash (ids replaced so a route shares one bucket)."""
    template = re.sub(r"\d{5,}", "{id}", path)
    return hashlib.sha1(template.encode()).hexdigest()[:16]


def ratelimit_headers(
    path: str, *, remaining: int = 49, reset_after: float = 1.0
) -> dict[str, str]:
    """``X-RateLimit-*`` headers as Discord sends them on every REST response."""
    return {
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": bucket_for(path),
    }

"""The HTTP client adapters share: JSON calls, the create rule, and error classification.

The create rule: a request that creates a billable job is sent again only when the first attempt
failed before the request could have reached the vendor (the connection was never established).
Any other failure after sending (reset, timeout, a gateway's 502/504) is an unknown outcome: the
caller must not retry blindly. Creates use a fresh connection so a stale keep-alive socket cannot
turn a "never sent" into an "unknown".
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.providers.errors import ErrorKind, ProviderError, bounded_wait_s

MAX_REPLY_BYTES = 4 * 1024 * 1024
LARGE_BODY_BYTES = 1024 * 1024  # aiohttp warns about sending larger bodies from memory at once
# On a create, these mean "a proxy timed out": the vendor may have created the job anyway.
AMBIGUOUS_GATEWAY_STATUSES = frozenset({502, 504})

_POLICY_WORDS = re.compile(
    r"content.?(policy|checker|safety|moderation|filter)|moderat|flagged|nsfw|sensitive|"
    r"safety|risk.?control|prohibited|violat|inappropriate|E005",
    re.IGNORECASE,
)
_FUNDS_WORDS = re.compile(
    r"insufficient.?(credit|balance|fund|quota)|not.?enough.?(balance|credit)|balance|"
    r"out of credit|exhausted|quota|payment|billing|top.?up|no credits",
    re.IGNORECASE,
)
_RESETS_IN = re.compile(
    r"(?:resets? in|retry after|try again in) ~?(\d+(?:\.\d+)?)\s*s", re.IGNORECASE
)


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    provider: str

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; a ProviderError (unknown) when it is not."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"unreadable reply (HTTP {self.status}): {self.text[:200]!r}",
                provider=self.provider,
                status_code=self.status,
            ) from None

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise ProviderError(
                ErrorKind.UNKNOWN,
                f"expected a JSON object, got {type(data).__name__}",
                provider=self.provider,
                status_code=self.status,
            )
        return data


class ProviderHttp:
    """HTTP for adapters, over an injected aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float = 30.0,
        connect_retries: int = 2,
        retry_delay_s: float = 0.5,
    ) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.connect_retries = connect_retries
        self.retry_delay_s = retry_delay_s
        self._create_session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._create_session is not None:
            await self._create_session.close()

    async def call(
        self,
        method: str,
        url: str,
        *,
        provider: str,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """A call that creates nothing (status, result, cancel): network errors are transient."""
        try:
            return await self._send(self.session, method, url, headers, json_body, params, provider)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProviderError(
                ErrorKind.TRANSIENT, f"{method} {url}: {error!r}", provider=provider
            ) from error

    async def create(
        self,
        url: str,
        *,
        provider: str,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """POST a billable create; retried only if the connection was never established."""
        session = self._fresh_connection_session()
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await self._send(session, "POST", url, headers, json_body, params, provider)
            except aiohttp.ClientConnectorError as error:  # nothing was sent
                if attempt > self.connect_retries:
                    raise ProviderError(
                        ErrorKind.TRANSIENT, f"cannot connect: {error}", provider=provider
                    ) from error
                await asyncio.sleep(self.retry_delay_s * attempt)
                continue
            except (aiohttp.ClientError, TimeoutError) as error:  # it may have been received
                raise ProviderError(
                    ErrorKind.TRANSIENT,
                    f"no answer to the create request: {error!r}",
                    provider=provider,
                    outcome_unknown=True,
                ) from error
            if reply.status in AMBIGUOUS_GATEWAY_STATUSES:
                # A gateway gave up waiting: the vendor behind it may have queued the job.
                raise ProviderError(
                    ErrorKind.TRANSIENT,
                    f"HTTP {reply.status} from a gateway on create: {reply.text[:200]}",
                    provider=provider,
                    status_code=reply.status,
                    outcome_unknown=True,
                )
            return reply

    async def upload(
        self,
        url: str,
        *,
        provider: str,
        field: str,
        filename: str,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """POST one file as multipart/form-data (creates nothing billable: errors are transient)."""
        form = aiohttp.FormData()
        form.add_field(field, io.BytesIO(data), filename=filename, content_type=content_type)
        try:
            return await self._send(
                self.session, "POST", url, headers, None, None, provider, data=form
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ProviderError(
                ErrorKind.TRANSIENT, f"upload to {url}: {error!r}", provider=provider
            ) from error

    def _fresh_connection_session(self) -> aiohttp.ClientSession:
        if self._create_session is None or self._create_session.closed:
            self._create_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=64),
                timeout=self.timeout,
            )
        return self._create_session

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        json_body: Any,
        params: Mapping[str, str] | None,
        provider: str,
        *,
        data: aiohttp.FormData | None = None,
    ) -> HttpReply:
        sent_headers = dict(headers or {})
        payload: aiohttp.FormData | io.BytesIO | None = data
        if json_body is not None:
            encoded = json.dumps(json_body).encode()
            if len(encoded) > LARGE_BODY_BYTES:  # images inline: stream it, don't block the loop
                payload, json_body = io.BytesIO(encoded), None
                sent_headers["Content-Type"] = "application/json"
        async with session.request(
            method,
            url,
            headers=sent_headers,
            json=json_body,
            data=payload,
            params=params,
            timeout=self.timeout,
            allow_redirects=False,
        ) as response:
            body = bytearray()  # read() may return before the whole body has arrived
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_REPLY_BYTES:
                    raise ProviderError(
                        ErrorKind.UNKNOWN, "reply larger than 4 MB", provider=provider
                    )
            return HttpReply(response.status, dict(response.headers), bytes(body), provider)


def retry_after_s(
    headers: Mapping[str, str], text: str = "", *, now_s: float | None = None
) -> float | None:
    """Seconds to wait, from Retry-After (seconds or date), a reset-at header, or the message;
    at most MAX_RETRY_AFTER_S."""
    return bounded_wait_s(_requested_wait_s(headers, text, now_s))


def _requested_wait_s(headers: Mapping[str, str], text: str, now_s: float | None) -> float | None:
    lower = {k.lower(): v for k, v in headers.items()}
    value = lower.get("retry-after")
    now = time.time() if now_s is None else now_s
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if _is_date(value) else None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - now)
    reset_at = lower.get("x-rate-limit-reset-at-utc") or lower.get("x-ratelimit-reset")
    if reset_at:
        try:
            number = float(reset_at)
            return max(0.0, number - now) if number > 1e9 else max(0.0, number)
        except ValueError:
            pass
    match = _RESETS_IN.search(text)
    if match:
        return float(match.group(1))
    return None


def _is_date(value: str) -> bool:
    try:
        email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    return True


def error_message(data: Any) -> tuple[str, str | None]:
    """Pull a human message and a vendor code out of the many error shapes vendors use."""
    if isinstance(data, str):
        return data, None
    if not isinstance(data, dict):
        return (json.dumps(data)[:300] if data is not None else ""), None
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        if code is None or isinstance(code, int) or str(code).isdigit():
            code = error.get("type") or code  # a numeric code is just the HTTP status again
        return str(error.get("message") or error.get("msg") or error), str(code) if code else None
    detail = data.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        return "; ".join(str(d.get("msg", d)) for d in detail if isinstance(d, dict)), None
    code = data.get("code") or data.get("error_code") or data.get("reason")
    for key in ("message", "detail", "error", "msg", "error_message", "details"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value, str(code) if code is not None else None
    return json.dumps(data)[:300], str(code) if code is not None else None


def classify(
    status: int,
    text: str,
    headers: Mapping[str, str],
    *,
    provider: str,
    funds_statuses: frozenset[int] = frozenset({402}),
) -> ProviderError:
    """Map an HTTP failure to the error taxonomy (vendors adjust with `funds_statuses`)."""
    try:
        message, code = error_message(json.loads(text)) if text else ("", None)
    except (ValueError, RecursionError):
        message, code = text[:300], None
    detail = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    everything = f"{message} {code or ''}"

    def err(kind: ErrorKind, retry: float | None = None) -> ProviderError:
        return ProviderError(
            kind,
            detail,
            provider=provider,
            status_code=status,
            retry_after_s=retry,
            vendor_code=code,
        )

    if status == 429:
        if _FUNDS_WORDS.search(everything) and "rate" not in everything.lower():
            return err(ErrorKind.OUT_OF_FUNDS)
        return err(ErrorKind.RATE_LIMITED, retry_after_s(headers, text))
    if status in funds_statuses:
        return err(ErrorKind.OUT_OF_FUNDS)
    if status in (400, 409, 413, 415, 422):
        if _POLICY_WORDS.search(everything):
            return err(ErrorKind.CONTENT_POLICY)
        if _FUNDS_WORDS.search(everything) and status != 422:
            return err(ErrorKind.OUT_OF_FUNDS)
        return err(ErrorKind.INVALID_INPUT)
    if status in (401, 403):
        if _FUNDS_WORDS.search(everything):
            return err(ErrorKind.OUT_OF_FUNDS)
        return err(ErrorKind.AUTH)
    if status in (404, 410):
        return err(ErrorKind.NOT_FOUND)
    if status in (408, 425) or status >= 500:
        return err(ErrorKind.TRANSIENT, retry_after_s(headers, text))
    return err(ErrorKind.UNKNOWN)


def failure_kind(message: str, code: str | None = None) -> ErrorKind:
    """Classify a job that ran and failed, from the vendor's failure text/code."""
    everything = f"{message} {code or ''}"
    if _POLICY_WORDS.search(everything):
        return ErrorKind.CONTENT_POLICY
    if _FUNDS_WORDS.search(everything):
        return ErrorKind.OUT_OF_FUNDS
    lowered = everything.lower()
    if any(w in lowered for w in ("invalid", "validation", "parameter", "bad request")):
        return ErrorKind.INVALID_INPUT
    if any(w in lowered for w in ("timeout", "timed out", "overloaded", "unavailable", "server")):
        return ErrorKind.TRANSIENT
    return ErrorKind.UNKNOWN

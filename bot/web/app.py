"""The bot's HTTP server (aiohttp, on the bot's event loop). It faces the internet (vendors must
reach the webhooks), so every request is bounded:

- a connection must send a complete request head within `idle_timeout_s` of opening or of its
  previous response, else it is closed (idle keep-alive connections, slow or half-sent headers);
- a webhook body must arrive whole within `body_timeout_s` (408) and be at most
  `max_body_bytes` (413);
- at most `max_concurrent_webhooks` webhook handlers run at once; more are answered 503 at once;
- metric labels come only from known values (a URL's provider segment is not one);
- /metrics (and /readyz's details) need `Authorization: Bearer <metrics_token>` when it is set.

POST /webhooks/{provider}/{token}   provider callbacks: busy (503), slow (408), size-limited raw
                                    body (413), unknown job (404), verified (401), parsed (400),
                                    de-duplicated, then 200 at once; the work happens in the
                                    pipeline afterwards
GET  /healthz                       the process is up
GET  /readyz                        the database is writable (and Discord connected, once the
                                    bot exists)
GET  /metrics                       Prometheus text format
GET  /media/{job}/{token}.mp4       a finished clip, with range requests (404 once retired)
GET  /media/{job}/{token}/{image}   an image-to-video job's image (`<sha256>.png|jpg`), for the
                                    vendors that fetch it by URL
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bot.pipeline import Pipeline
from bot.providers.signing import same_secret
from storage import StorageError

log = logging.getLogger(__name__)

JSON = "application/json"
BUSY_RETRY_AFTER_S = 5
LINGER_S = 1.0  # aiohttp's default is 10 s of reading an unwanted body after answering


@dataclass(frozen=True)
class WebLimits:
    """What one request may cost the server."""

    max_body_bytes: int = 1024 * 1024
    body_timeout_s: float = 30.0
    max_concurrent_webhooks: int = 128
    metrics_token: str | None = None


class HandlerSlots:
    """A count of webhook handlers running; beyond `limit` a request is turned away at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def take(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def give_back(self) -> None:
        self.in_flight -= 1


SERVICE = web.AppKey("service", Pipeline)
LIMITS = web.AppKey("limits", WebLimits)
WEBHOOK_SLOTS = web.AppKey("webhook_slots", HandlerSlots)
READY_CHECKS = web.AppKey("ready_checks", dict[str, Callable[[], Awaitable[bool]]])


def build_app(
    service: Pipeline,
    *,
    max_body_bytes: int = 1024 * 1024,
    body_timeout_s: float = 30.0,
    max_concurrent_webhooks: int = 128,
    metrics_token: str | None = None,
    ready_checks: dict[str, Callable[[], Awaitable[bool]]] | None = None,
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app[SERVICE] = service
    app[LIMITS] = WebLimits(
        max_body_bytes, body_timeout_s, max_concurrent_webhooks, metrics_token or None
    )
    app[WEBHOOK_SLOTS] = HandlerSlots(max_concurrent_webhooks)
    app[READY_CHECKS] = ready_checks or {}
    app.router.add_post("/webhooks/{provider}/{token}", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/media/{job}/{token}.mp4", media)
    app.router.add_get("/media/{job}/{token}/{image}", media_image)
    return app


async def read_limited(request: web.Request, limit: int, timeout_s: float) -> bytes | None:
    """The raw body, or None when it is larger than `limit` (read no further than that).

    TimeoutError when the whole body has not arrived within `timeout_s`.
    """
    async with asyncio.timeout(timeout_s):
        if request.content_length is not None:
            if request.content_length > limit:
                return None
            return await request.read()  # exactly content_length bytes
        body = bytearray()  # chunked: count as it comes
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)


def _closing(response: web.Response) -> web.Response:
    """The response, with the connection closed after it (what is left unread is dropped)."""
    response.force_close()
    return response


async def webhook(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    limits = request.app[LIMITS]
    slots = request.app[WEBHOOK_SLOTS]
    provider = request.match_info["provider"]
    if not slots.take():
        service.metrics.webhook(provider, "busy")
        return _closing(
            web.json_response(
                {"error": "too many webhooks at once; retry later"},
                status=503,
                headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
            )
        )
    try:
        return await _webhook(request, service, limits, provider)
    finally:
        slots.give_back()


async def _webhook(
    request: web.Request, service: Pipeline, limits: WebLimits, provider: str
) -> web.Response:
    try:
        body = await read_limited(request, limits.max_body_bytes, limits.body_timeout_s)
    except TimeoutError:
        service.metrics.webhook(provider, "too_slow")
        return _closing(web.json_response({"error": "body not received in time"}, status=408))
    if body is None:
        service.metrics.webhook(provider, "too_large")
        return _closing(web.json_response({"error": "body too large"}, status=413))
    try:
        status, reason = await service.receive_webhook(
            provider, request.match_info["token"], request.headers, body
        )
    except StorageError as error:  # fail closed; the vendor will retry
        log.error("webhook could not be recorded: %s", error)
        return web.json_response({"error": "temporarily unavailable"}, status=503)
    common = _COMMON_ANSWERS.get((status, reason))
    if common is not None:
        return web.Response(body=common, content_type=JSON)
    return web.json_response({"ok": status == 200, "reason": reason}, status=status)


# The answers nearly every webhook gets, encoded once.
_COMMON_ANSWERS = {
    (200, reason): json.dumps({"ok": True, "reason": reason}).encode()
    for reason in ("ok", "duplicate")
}


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def _may_see_internals(request: web.Request) -> bool:
    """Whether the request may read /metrics and /readyz's details: always when no metrics token
    is set, else only with `Authorization: Bearer <token>`."""
    token = request.app[LIMITS].metrics_token
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and same_secret(given.strip(), token)


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    checks: dict[str, bool] = {}
    try:
        await service.db.check_writable()
        checks["database"] = True
    except StorageError:
        checks["database"] = False
    for name, check in request.app[READY_CHECKS].items():
        try:
            checks[name] = await check()
        except Exception:
            checks[name] = False
    checks["pipeline"] = service.accepting
    ok = all(checks.values())
    answer: dict[str, object] = {"ready": ok}
    if _may_see_internals(request):
        answer["checks"] = checks
    return web.json_response(answer, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    if not _may_see_internals(request):
        raise web.HTTPUnauthorized(
            text="a bearer token is needed (KLINGBOT_METRICS_TOKEN)\n",
            headers={"WWW-Authenticate": 'Bearer realm="klingbot metrics"'},
        )
    service = request.app[SERVICE]
    await service.metrics.refresh(service.jobs, service.ledger)
    return web.Response(
        body=service.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def media(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    job = await service.jobs.find(request.match_info["job"])
    token = request.match_info["token"]
    if (
        job is None
        or job.media_retired_at_ms is not None  # its message was deleted: the link goes too
        or not same_secret(token, job.media_token)
    ):
        raise web.HTTPNotFound(text="no such clip")
    path = service.media.clip_path(job.id)
    if not path.is_file():
        raise web.HTTPGone(text="this clip is no longer kept")
    return web.FileResponse(
        Path(path), headers={"Content-Type": "video/mp4", "Cache-Control": "private, max-age=3600"}
    )


async def media_image(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    job = await service.jobs.find(request.match_info["job"])
    token = request.match_info["token"]
    if job is None or not same_secret(token, job.media_token):
        raise web.HTTPNotFound(text="no such image")
    found = service.media.job_image(job, request.match_info["image"])
    if found is None:
        raise web.HTTPNotFound(text="no such image")
    path, ref = found
    if not path.is_file():
        raise web.HTTPGone(text="this image is no longer kept")
    return web.FileResponse(
        path, headers={"Content-Type": ref.mime, "Cache-Control": "private, max-age=3600"}
    )


class WebServer:
    """Runs an aiohttp application with AppRunner on the current event loop.

    `idle_timeout_s` is aiohttp's keep-alive timer, which runs from a connection's start and from
    the end of each response until the next request head is complete: it closes idle keep-alive
    connections and connections whose headers come too slowly or never end. After an early
    answer (408, 413, 503) the rest of a body is read and dropped for at most `LINGER_S`, so the
    client sees the answer, then the connection is closed.
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        shutdown_timeout_s: float = 10.0,
        idle_timeout_s: float = 15.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=shutdown_timeout_s,
            keepalive_timeout=idle_timeout_s,
            lingering_time=LINGER_S,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        log.info("web server listening on %s", self.url)

    async def stop(self) -> None:
        """Stop accepting connections; in-flight handlers get shutdown_timeout_s to finish."""
        await self._runner.cleanup()

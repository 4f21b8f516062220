"""The bot's HTTP server (aiohttp, on the bot's event loop).

POST /webhooks/{provider}/{token}   provider callbacks: size-limited raw body (413), unknown job
                                    (404), verified (401), parsed (400), de-duplicated, then
                                    200 at once; the work happens in the pipeline afterwards
GET  /healthz                       the process is up
GET  /readyz                        the database is writable (and Discord connected, once the
                                    bot exists)
GET  /metrics                       Prometheus text format
GET  /media/{job}/{token}.mp4       a finished clip, with range requests
GET  /media/{job}/{token}/{image}   an image-to-video job's image (`<sha256>.png|jpg`), for the
                                    vendors that fetch it by URL
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from bot.pipeline import Pipeline
from storage import StorageError

log = logging.getLogger(__name__)

SERVICE = web.AppKey("service", Pipeline)
MAX_BODY = web.AppKey("max_body_bytes", int)
READY_CHECKS = web.AppKey("ready_checks", dict[str, Callable[[], Awaitable[bool]]])
JSON = "application/json"


def build_app(
    service: Pipeline,
    *,
    max_body_bytes: int = 1024 * 1024,
    ready_checks: dict[str, Callable[[], Awaitable[bool]]] | None = None,
) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app[SERVICE] = service
    app[MAX_BODY] = max_body_bytes
    app[READY_CHECKS] = ready_checks or {}
    app.router.add_post("/webhooks/{provider}/{token}", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/media/{job}/{token}.mp4", media)
    app.router.add_get("/media/{job}/{token}/{image}", media_image)
    return app


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it is larger than `limit` (read no further than that)."""
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


async def webhook(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    provider = request.match_info["provider"]
    body = await read_limited(request, request.app[MAX_BODY])
    if body is None:
        service.metrics.webhooks.labels(provider[:20], "too_large").inc()
        return web.json_response({"error": "body too large"}, status=413)
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
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
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
    if job is None or not hmac.compare_digest(job.media_token, token):
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
    if job is None or not hmac.compare_digest(job.media_token, token):
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
    """Runs an aiohttp application with AppRunner on the current event loop."""

    def __init__(
        self, app: web.Application, host: str, port: int, *, shutdown_timeout_s: float = 10.0
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s)

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

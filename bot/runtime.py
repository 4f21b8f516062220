"""Builds the running system once, from settings, and tears it down in order.

Everything is created here and passed in (database, HTTP session, providers, service, web server);
no module keeps global state. Shutdown: stop intake, let in-flight webhook handlers finish, stop
the pipeline, close providers, sessions and the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import aiohttp.web

from bot.gc_pacer import GcPacer
from bot.media import Transcoder
from bot.pipeline import (
    DeliverySink,
    JobObserver,
    MediaStore,
    Metrics,
    Pipeline,
    PipelineConfig,
    ProviderIncident,
)
from bot.pricing import PriceTable
from bot.providers import ProviderError, ProviderHttp, VideoProvider, build_provider
from bot.settings import Settings
from bot.web.app import WebServer, build_app
from storage import Clock, Database

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    session: aiohttp.ClientSession
    providers: dict[str, VideoProvider]
    service: Pipeline
    web: WebServer | None
    gc_pacer: GcPacer = field(default_factory=GcPacer)
    transcoder: Transcoder = field(default_factory=Transcoder)  # re-encodes to fit upload limits

    async def start(self) -> None:
        await self.service.start()
        if self.web is not None:
            await self.web.start()
        self.gc_pacer.start()

    async def stop(self) -> None:
        await self.gc_pacer.stop()
        self.service.close_intake()
        if self.web is not None:
            await self.web.stop()
        await self.service.stop()


def build_web_app(
    settings: Settings,
    service: Pipeline,
    ready_checks: dict[str, Callable[[], Awaitable[bool]]] | None = None,
) -> aiohttp.web.Application:
    """The web application (webhooks, media links, health, metrics) the settings describe."""
    token = settings.metrics_token
    return build_app(
        service,
        max_body_bytes=settings.webhook_max_body_kb * 1024,
        body_timeout_s=settings.http_body_timeout_s,
        max_concurrent_webhooks=settings.webhook_max_concurrent,
        metrics_token=token.get_secret_value().strip() or None if token else None,
        ready_checks=ready_checks,
    )


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    delivery: DeliverySink,
    observers: Iterable[JobObserver] = (),
    incident_handlers: Iterable[Callable[[ProviderIncident], Awaitable[None]]] = (),
    clock: Clock | None = None,
    with_web: bool = True,
    ready_checks: dict[str, Callable[[], Awaitable[bool]]] | None = None,
) -> AsyncIterator[Runtime]:
    """Open the database and sessions and build the pipeline with the front end's sink,
    observers and incident handlers (not started yet)."""
    db = await Database.open(settings.db_path, clock=clock)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.http_timeout_s))
    http = ProviderHttp(session, timeout_s=settings.http_timeout_s)
    providers: dict[str, VideoProvider] = {}
    try:
        for name in settings.provider_chain:
            providers[name] = build_provider(name, settings, http)
        for name, provider in providers.items():
            try:
                await provider.prepare_webhooks()
            except ProviderError as error:  # polling still works without webhooks
                log.warning("webhook setup for %s failed: %s", name, error.detail)
        media = MediaStore(
            root=settings.media_dir,
            public_url=settings.public_url,
            retention_s=settings.media_retention_s,
            max_total_bytes=settings.media_max_total_mb * 1024 * 1024,
            clock=db.clock,
        )
        media.prepare()
        service = Pipeline(
            db=db,
            providers=providers,
            default_provider=settings.provider,
            pricing=PriceTable.from_settings(settings),
            media=media,
            delivery=delivery,
            session=session,
            config=PipelineConfig.from_settings(settings),
            metrics=Metrics(),
            observers=observers,
            incident_handlers=incident_handlers,
        )
        web = None
        if with_web:
            web = WebServer(
                build_web_app(settings, service, ready_checks),
                settings.http_host,
                settings.http_port,
                idle_timeout_s=settings.http_idle_timeout_s,
            )
        transcoder = Transcoder(settings.transcode_concurrency)
        runtime = Runtime(settings, db, session, providers, service, web, transcoder=transcoder)
        try:
            yield runtime
        finally:
            await runtime.stop()
            await asyncio.to_thread(transcoder.close)
    finally:
        for provider in providers.values():
            await provider.close()
        await http.close()
        await session.close()
        await db.close()

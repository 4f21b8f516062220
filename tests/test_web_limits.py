"""The web server faces the internet: junk URLs add no metric series, idle and slow connections
are closed, slow webhook bodies get 408, surplus webhook handlers 503, /metrics can need a token.

Each test runs the real runtime (`open_runtime`: settings, database, pipeline, web server) on
127.0.0.1 and talks to it over real sockets, raw where a well-behaved client would not do it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp

from bot.runtime import Runtime, open_runtime
from bot.settings import Settings
from bot.web import app as web_app
from tests.pipeline_support import RecordingSink

ROOT = Path(__file__).resolve().parent.parent
# How long a test waits for the server to do something before it fails (a bound, not a claim).
WAIT_S = 20.0


class Sockets:
    """Raw connections to the server, all closed when the test ends."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self, data: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        if data:
            writer.write(data)
            await writer.drain()
        return reader, writer

    async def send(self, data: bytes = b"") -> asyncio.StreamReader:
        return (await self.open(data))[0]

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()


@asynccontextmanager
async def running(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Runtime, Sockets]]:
    config = Settings(
        _env_file=None,
        db_path=tmp_path / "klingbot.db",
        media_dir=tmp_path / "media",
        http_host="127.0.0.1",
        http_port=0,
        **settings,
    )
    async with open_runtime(config, delivery=RecordingSink(tmp_path / "out")) as runtime:
        await runtime.start()
        assert runtime.web is not None
        sockets = Sockets(runtime.web.port)
        try:
            yield runtime, sockets
        finally:
            await sockets.close()


def port_of(runtime: Runtime) -> int:
    assert runtime.web is not None
    return runtime.web.port


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), WAIT_S)


def slow_webhook(provider: str = "local") -> bytes:
    """A webhook whose headers promise 1000 bytes of body, of which only 10 are sent."""
    return (
        f"POST /webhooks/{provider}/some-token HTTP/1.1\r\nHost: bot\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        '{"id": "1"'
    ).encode()


async def test_junk_provider_names_in_webhook_urls_add_no_metric_series(tmp_path: Path) -> None:
    async with running(tmp_path, webhook_max_body_kb=1) as (runtime, _sockets):
        base = f"http://127.0.0.1:{port_of(runtime)}"
        async with aiohttp.ClientSession() as session:
            for n in range(40):
                url = f"{base}/webhooks/junk-{n}/token"
                async with session.post(url, data=b"{}") as response:
                    assert response.status == 404
                async with session.post(url, data=b"x" * 2048) as response:
                    assert response.status == 413
            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
        series = [line for line in text.splitlines() if line.startswith("klingbot_webhooks_total")]
        assert "junk" not in text
        assert sorted(series) == [
            'klingbot_webhooks_total{provider="other",result="too_large"} 40.0',
            'klingbot_webhooks_total{provider="other",result="unknown_job"} 40.0',
        ]


async def test_idle_connections_and_unfinished_headers_are_closed(tmp_path: Path) -> None:
    async with running(tmp_path, http_idle_timeout_s=0.5) as (_runtime, sockets):
        silent = await sockets.send()
        half_sent = await sockets.send(b"POST /webhooks/local/x HTTP/1.1\r\nHost: bot\r\nConte")
        kept_alive = await sockets.send(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n\r\n")
        assert await until_closed(silent) == b""
        assert await until_closed(half_sent) == b""
        answered = await until_closed(kept_alive)  # the answer, then nothing more: closed
        assert answered.startswith(b"HTTP/1.1 200 OK") and answered.endswith(b"ok\n")


async def test_a_webhook_body_that_comes_too_slowly_gets_408(tmp_path: Path) -> None:
    async with running(tmp_path, http_body_timeout_s=0.5) as (runtime, sockets):
        answer = await until_closed(await sockets.send(slow_webhook()))
        assert answer.startswith(b"HTTP/1.1 408 ")
        metrics = runtime.service.metrics.render().decode()
        assert 'klingbot_webhooks_total{provider="local",result="too_slow"} 1.0' in metrics


async def test_webhook_handlers_beyond_the_cap_are_turned_away_at_once(tmp_path: Path) -> None:
    async with running(tmp_path, webhook_max_concurrent=2, http_body_timeout_s=60) as (
        runtime,
        sockets,
    ):
        assert runtime.web is not None
        slots = runtime.web.app[web_app.WEBHOOK_SLOTS]
        held = [await sockets.open(slow_webhook()) for _ in range(2)]
        for _ in range(int(WAIT_S / 0.01)):
            if slots.in_flight == 2:
                break
            await asyncio.sleep(0.01)
        assert slots.in_flight == 2
        complete = (
            b"POST /webhooks/local/some-token HTTP/1.1\r\nHost: bot\r\nContent-Length: 2\r\n\r\n{}"
        )
        turned_away = await until_closed(await sockets.send(complete))
        assert turned_away.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in turned_away
        for _, writer in held:  # the slow senders give up: their handlers end
            writer.close()
            await writer.wait_closed()
        for _ in range(int(WAIT_S / 0.01)):
            if slots.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert slots.in_flight == 0
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port_of(runtime)}/webhooks/local/t", data=b"{}") as r,
        ):
            assert r.status == 404  # a slot is free again


async def test_many_slow_webhooks_all_end_and_close(tmp_path: Path) -> None:
    """The issue's flood: slow webhook requests must not stay open (each one is answered 408 or
    503 and its connection closed), and no handler is left running."""
    async with running(
        tmp_path, webhook_max_concurrent=4, http_body_timeout_s=0.5, http_idle_timeout_s=0.5
    ) as (runtime, sockets):
        assert runtime.web is not None
        readers = [await sockets.send(slow_webhook()) for _ in range(60)]
        answers = await asyncio.gather(*(until_closed(r) for r in readers))
        statuses = sorted(re.match(rb"HTTP/1.1 (\d+)", a).group(1) for a in answers)  # type: ignore[union-attr]
        assert set(statuses) <= {b"408", b"503"} and len(statuses) == 60
        assert statuses.count(b"408") >= 1
        assert runtime.web.app[web_app.WEBHOOK_SLOTS].in_flight == 0


async def test_metrics_and_ready_details_need_the_token_when_one_is_set(tmp_path: Path) -> None:
    async with running(tmp_path, metrics_token="s3cret-token") as (runtime, sockets):
        base = f"http://127.0.0.1:{port_of(runtime)}"
        async with aiohttp.ClientSession() as session:

            async def get(path: str, token: str | None = None) -> tuple[int, str]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with session.get(f"{base}{path}", headers=headers) as response:
                    return response.status, await response.text()

            assert (await get("/metrics"))[0] == 401
            assert (await get("/metrics", "wrong"))[0] == 401
            status, text = await get("/metrics", "s3cret-token")
            assert status == 200 and "klingbot_jobs" in text
            status, text = await get("/readyz")
            assert status == 200 and "checks" not in text
            status, text = await get("/readyz", "s3cret-token")
            assert status == 200 and '"database": true' in text
        raw = await until_closed(
            await sockets.send(
                b"GET /metrics HTTP/1.1\r\nHost: bot\r\nConnection: close\r\n"
                b"Authorization: Bearer \xff\xfe\xc3\x28\r\n\r\n",
            )
        )
        assert raw.startswith(b"HTTP/1.1 401 ")


def test_compose_publishes_the_port_on_loopback_only_by_default() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    ports = re.findall(r'^\s*-\s*"([^"]+)"', compose, re.MULTILINE)
    # the single bot, and the two replicas of the `replicas` profile
    assert ports == [
        "${KLINGBOT_PUBLISH_ADDRESS:-127.0.0.1}:8080:8080",
        "${KLINGBOT_PUBLISH_ADDRESS:-127.0.0.1}:8080:8080",
        "${KLINGBOT_PUBLISH_ADDRESS:-127.0.0.1}:8081:8080",
    ]

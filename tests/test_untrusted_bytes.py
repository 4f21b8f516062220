"""Any bytes as a media token, a webhook token or a webhook signature get 401 or 404 from the
running web server (over real sockets), never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers import ProviderHttp, VideoProvider
from bot.providers.eachlabs import EachLabsProvider
from bot.settings import EachLabsSettings
from storage import Job
from tests.pipeline_support import Harness, member, pipeline
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

SECRET = "whsec-untrusted-bytes"
# What may stand in an HTTP header value (anything else is refused by the parser with 400).
HEADER_BYTES = st.binary(max_size=80).map(
    lambda raw: bytes(b for b in raw if b == 0x09 or 0x20 <= b != 0x7F).strip(b" \t")
)
PREFIXES = st.sampled_from([b"", b"sha256=", b"SHA256= "])


async def status_of(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 20)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return int(line.split()[1])


def post(path: str, headers: dict[bytes, bytes], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: bot", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers.items()]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_any_bytes_as_token_or_signature_get_401_or_404(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()

    async def start() -> tuple[Harness, Job, bytes]:
        double = await stack.enter_async_context(EachLabsDouble())

        def build(http: ProviderHttp) -> dict[str, VideoProvider]:
            settings = EachLabsSettings(
                api_key=SecretStr(API_KEY),
                base_url=double.api_base,
                webhook_secret=SecretStr(SECRET),
            )
            return {"eachlabs": EachLabsProvider(settings, http)}

        harness = await stack.enter_async_context(
            pipeline(
                tmp_path, build, default_provider="eachlabs", poll_initial_s=600, poll_max_s=600
            )
        )
        await harness.ledger.issue_to_member(1, 7, 100, key="seed")
        receipt = await harness.service.submit(member(), {"prompt": "a fox", "duration_s": 5})
        while not double.jobs:
            await asyncio.sleep(0.01)
        body = double.webhook_body(next(iter(double.jobs.values())))
        return harness, receipt.job, body

    try:
        harness, job, body = loop.run_until_complete(start())
        port = harness.web.port

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(token=st.binary(max_size=40), signature=HEADER_BYTES, prefix=PREFIXES)
        def check(token: bytes, signature: bytes, prefix: bytes) -> None:
            quoted = quote(token, safe="")
            media = f"GET /media/{job.id}/{quoted}.mp4 HTTP/1.1\r\nHost: bot\r\nConnection: close\r\n\r\n"
            assert loop.run_until_complete(status_of(port, media.encode())) == 404
            stamp = str(int(time.time())).encode()
            signed = {
                b"Content-Type": b"application/json",
                b"X-Webhook-Timestamp": stamp,
                b"X-Webhook-Signature": prefix + signature,
            }
            unknown = post(f"/webhooks/eachlabs/{quoted}", signed, body)
            assert loop.run_until_complete(status_of(port, unknown)) == 404
            forged = post(f"/webhooks/eachlabs/{job.webhook_token}", signed, body)
            assert loop.run_until_complete(status_of(port, forged)) == 401

        check()
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()

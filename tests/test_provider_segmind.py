"""Segmind adapter against its loopback double: v2 async, v1 sync fallback, statuses, errors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.capabilities import CAPABILITIES
from bot.providers.download import DownloadPolicy, download
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError, WebhookRefused
from bot.providers.http import ProviderHttp
from bot.providers.segmind import SegmindProvider, read_v1_json, reset_in_s
from bot.settings import SegmindSettings
from tests.provider_doubles.segmind import API_KEY, MODEL, SegmindDouble
from tests.provider_support import (
    MULTI,
    NO_HTTP,
    PLAIN,
    PLAIN_FULL,
    VOICE,
    free_port,
    http,
    json_values,
)

__all__ = ["http"]
V2 = f"/v2/{MODEL}"
V1 = f"/v1/{MODEL}"
NOW = 1_800_000_000.0
Make = Callable[..., SegmindProvider]


@pytest.fixture
async def double() -> AsyncIterator[SegmindDouble]:
    async with SegmindDouble() as d:
        yield d


@pytest.fixture
async def make(double: SegmindDouble, http: ProviderHttp, tmp_path: Path) -> AsyncIterator[Make]:
    """Adapters on the double; each is closed (its v1 session) at the end of the test."""
    made: list[SegmindProvider] = []
    clients: list[ProviderHttp] = []

    def build(
        mode: str = "auto",
        *,
        key: str = API_KEY,
        base_url: str | None = None,
        v1_timeout_s: float = 5.0,
        now: float | None = None,
        timeout_s: float | None = None,
    ) -> SegmindProvider:
        settings = SegmindSettings(
            api_key=SecretStr(key), base_url=base_url or double.base_url, api_mode=mode
        )
        extra: dict[str, Any] = {"now_s": (lambda: now)} if now is not None else {}
        client = http
        if timeout_s is not None:  # a shorter wait for tests where the double never answers
            client = ProviderHttp(http.session, timeout_s=timeout_s, retry_delay_s=0.2)
            clients.append(client)
        provider = SegmindProvider(
            settings, client, work_dir=tmp_path / "segmind", v1_timeout_s=v1_timeout_s, **extra
        )
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()
    for client in clients:
        await client.close()


def parser() -> SegmindProvider:
    return SegmindProvider(SegmindSettings(), NO_HTTP)


def clips(tmp_path: Path) -> list[str]:
    folder = tmp_path / "segmind"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- the request on the wire ------------------------------------------------------------------


async def test_plain_request_on_the_wire(double: SegmindDouble, make: Make) -> None:
    sub = await make().submit(PLAIN, webhook_url="https://bot.example/webhooks/segmind/tok")
    [create] = double.creates_of(V2)
    assert create.header("x-api-key") == API_KEY
    assert create.header("Authorization") is None
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "prompt": "A red fox running through snow",
        "duration": "5",
        "aspect_ratio": "16:9",
        "generate_audio": True,
    }
    assert sub.job == ProviderJob(
        "sg-req-000001",
        {
            "api": "v2",
            "status_url": f"{double.base_url}/v2/requests/sg-req-000001/status",
            "response_url": f"{double.base_url}/v2/requests/sg-req-000001",
        },
    )
    assert (sub.status.state, sub.status.vendor_status) == (ProviderState.QUEUED, "QUEUED")
    assert double.creates == 1 and double.creates_of(V1) == []


async def test_all_options_on_the_wire(double: SegmindDouble, make: Make) -> None:
    assert CAPABILITIES["segmind"].problems(PLAIN_FULL) == []
    await make().submit(PLAIN_FULL, webhook_url=None)
    assert double.creates_of(V2)[0].json == {
        "prompt": "A lighthouse at dusk, waves crashing",
        "negative_prompt": "blurry, watermark",
        "duration": "10",
        "aspect_ratio": "9:16",
        "generate_audio": False,
        "cfg_scale": 0.7,
        "shot_type": "customize",
    }


async def test_multishot_request_on_the_wire(double: SegmindDouble, make: Make) -> None:
    await make().submit(MULTI, webhook_url=None)
    assert double.creates_of(V2)[0].json == {
        "multi_prompt": [
            {"prompt": "A fox wakes up in its den", "duration": "3"},
            {"prompt": "The fox runs across a snowy field", "duration": "5"},
        ],
        "shot_type": "customize",
        "duration": "8",
        "aspect_ratio": "1:1",
        "generate_audio": True,
    }


async def test_voice_request_on_the_wire(double: SegmindDouble, make: Make) -> None:
    await make().submit(VOICE, webhook_url=None)
    assert double.creates_of(V2)[0].json == {
        "prompt": "<<<voice_1>>> says hello to <<<voice_2>>> on a park bench",
        "duration": "5",
        "aspect_ratio": "16:9",
        "generate_audio": True,
        "voice_ids": ["voice_123456", "voice_abcdef"],
    }


@pytest.mark.parametrize(
    ("update", "problem"),
    [
        ({"shot_type": "intelligent"}, "Segmind supports shot type customize only."),
        ({"resolution": "4k"}, "Segmind renders 1080p only (got 4k)."),
    ],
)
async def test_what_segmind_cannot_do_is_refused_before_sending(
    double: SegmindDouble, make: Make, update: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ProviderError) as info:
        await make().submit(PLAIN.model_copy(update=update), webhook_url=None)
    assert info.value.kind is ErrorKind.INVALID_INPUT and info.value.detail == problem
    assert double.requests == []


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("QUEUED", ProviderState.QUEUED),
        ("PROCESSING", ProviderState.RUNNING),
        ("COMPLETED", ProviderState.SUCCEEDED),
        ("FAILED", ProviderState.FAILED),
        ("completed", ProviderState.SUCCEEDED),
        ("processing", ProviderState.RUNNING),
    ],
)
def test_every_status_word(word: str, state: ProviderState) -> None:
    status = parser().parse_status(
        {"status": word, "output": "https://images.segmind.com/v.mp4", "error": "boom"}
    )
    assert status.state is state and status.vendor_status == word
    if state is ProviderState.SUCCEEDED:
        assert status.video_url == "https://images.segmind.com/v.mp4"
    if state is ProviderState.FAILED:
        assert status.error is not None and status.error.detail == "boom"


def test_status_reply_details() -> None:
    provider = parser()
    # the light status reply has no output: not finished for us yet
    assert provider.parse_status({"status": "COMPLETED"}).state is ProviderState.RUNNING
    assert (
        provider.parse_status({"status": "COMPLETED", "video": "https://x.example/v.mp4"}).video_url
        == "https://x.example/v.mp4"
    )
    # a result body with only the output is finished
    only_output = provider.parse_status({"output": ["https://x.example/o.mp4"], "metrics": {}})
    assert (only_output.state, only_output.vendor_status) == (ProviderState.SUCCEEDED, "COMPLETED")
    assert only_output.video_url == "https://x.example/o.mp4"
    bad_bodies: list[dict[str, Any]] = [
        {"status": "EXPLODED"},
        {"metrics": {}},
        {"status": None, "output": "https://x/"},
    ]
    for bad in bad_bodies:
        with pytest.raises(ProviderError) as info:
            provider.parse_status(bad)
        assert info.value.kind is ErrorKind.UNKNOWN


async def test_poll_through_to_success_and_download(
    double: SegmindDouble, make: Make, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    seen = [await provider.poll(sub.job) for _ in range(3)]
    assert [(s.state, s.vendor_status) for s in seen] == [
        (ProviderState.QUEUED, "QUEUED"),
        (ProviderState.RUNNING, "PROCESSING"),
        (ProviderState.SUCCEEDED, "COMPLETED"),
    ]
    gets = [r for r in double.requests if r.method == "GET"]
    status_path = "/v2/requests/sg-req-000001/status"
    assert [r.path for r in gets] == [status_path] * 3 + ["/v2/requests/sg-req-000001"]
    assert all(r.header("x-api-key") == API_KEY for r in gets)
    assert all(r.header("Authorization") is None for r in gets)
    final = seen[-1]
    assert final.video_url == double.file_url(sub.job.id) and final.progress_pct == 100
    size = await download(
        http.session,
        final.video_url,
        tmp_path / "v.mp4",
        max_bytes=10_000_000,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url]),
    )
    assert (tmp_path / "v.mp4").read_bytes() == double.video_bytes
    assert size == len(double.video_bytes)


async def test_the_urls_segmind_returns_are_used(double: SegmindDouble, make: Make) -> None:
    double.link_prefix = "/alt"
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert sub.job.data["status_url"] == f"{double.base_url}/alt/v2/requests/sg-req-000001/status"
    double.jobs[sub.job.id].script = ["succeeded"]
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.SUCCEEDED
    assert [r.path for r in double.requests if r.method == "GET"] == [
        "/alt/v2/requests/sg-req-000001/status",
        "/alt/v2/requests/sg-req-000001",
    ]


async def test_urls_on_another_origin_are_not_given_the_key(
    double: SegmindDouble, make: Make
) -> None:
    double.link_origin = "http://collector.example:9"
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert sub.job.data == {"api": "v2"}
    # a job stored with foreign links (or none) is polled at the documented paths
    forged = ProviderJob(sub.job.id, {"api": "v2", "status_url": "http://collector.example:9/s"})
    assert (await provider.poll(forged)).state is ProviderState.QUEUED
    assert (await provider.poll(ProviderJob(sub.job.id))).state is ProviderState.RUNNING
    assert [r.path for r in double.requests if r.method == "GET"] == [
        "/v2/requests/sg-req-000001/status"
    ] * 2


async def test_expired_request_record_is_not_found(double: SegmindDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert (await provider.poll(sub.job)).state is ProviderState.QUEUED
    double.expired_requests.add(sub.job.id)
    with pytest.raises(ProviderError) as info:
        await provider.poll(sub.job)
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.status_code == 404


async def test_expired_result_url(
    double: SegmindDouble, make: Make, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    double.jobs[sub.job.id].script = ["succeeded"]
    status = await provider.poll(sub.job)
    assert status.video_url is not None
    double.expired_files.add(sub.job.id)
    with pytest.raises(ProviderError) as info:
        await download(
            http.session,
            status.video_url,
            tmp_path / "v.mp4",
            max_bytes=10**7,
            timeout_s=5,
            policy=DownloadPolicy.trusting([double.base_url]),
        )
    assert info.value.kind is ErrorKind.RESULT_EXPIRED
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("failed_http", [422, 200])
@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Prompt is Mandatory and must be string", ErrorKind.UNKNOWN),
        ("The prompt was flagged by content moderation", ErrorKind.CONTENT_POLICY),
        ("Output video failed the NSFW safety check", ErrorKind.CONTENT_POLICY),
        ("invalid parameter: duration", ErrorKind.INVALID_INPUT),
        ("upstream timed out", ErrorKind.TRANSIENT),
    ],
)
async def test_job_failures_are_classified(
    double: SegmindDouble, make: Make, failed_http: int, message: str, kind: ErrorKind
) -> None:
    double.failed_http = failed_http
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = double.jobs[sub.job.id]
    job.script, job.error = ["queued", "failed"], message
    assert (await provider.poll(sub.job)).state is ProviderState.QUEUED
    status = await provider.poll(sub.job)
    assert (status.state, status.vendor_status) == (ProviderState.FAILED, "FAILED")
    assert status.error is not None
    assert status.error.kind is kind and status.error.detail == message


async def test_result_endpoint_failure_after_completed(double: SegmindDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    double.next_poll(200, {"status": "COMPLETED", "metrics": {}})
    double.next_poll(422, {"status": "FAILED", "error": "content safety: output blocked"})
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.error is not None
    assert status.error.kind is ErrorKind.CONTENT_POLICY


async def test_cancel_is_not_offered(double: SegmindDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert await provider.cancel(sub.job) is False
    assert [r.method for r in double.requests] == ["POST"]


# -- HTTP errors on create and poll ----------------------------------------------------------


def iso_in(seconds: float) -> str:
    return email.utils.formatdate(NOW + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (400, {"error": "duration must be one of 3..15"}, {}, ErrorKind.INVALID_INPUT),
        (400, {"error": "Prompt flagged by content moderation"}, {}, ErrorKind.CONTENT_POLICY),
        (401, {"error": "Missing Authorization or x-api-key in header"}, {}, ErrorKind.AUTH),
        (
            401,
            {"error": "invalid_api_key", "error_description": "API key is invalid."},
            {},
            ErrorKind.AUTH,
        ),
        (403, {"error": "Insufficient permissions"}, {}, ErrorKind.AUTH),
        (
            406,
            {"error": "Insufficient credits. Balance: 0.12, required: 0.84"},
            {},
            ErrorKind.OUT_OF_FUNDS,
        ),
        (406, "Insufficient credits", {}, ErrorKind.OUT_OF_FUNDS),
        (406, "", {}, ErrorKind.OUT_OF_FUNDS),
        (406, {"error": "Invalid content type"}, {}, ErrorKind.UNKNOWN),
        (
            406,
            {"error": "Team spend limit reached: monthly cap of 50 credits"},
            {},
            ErrorKind.AUTH,
        ),
        (406, {"error": "aspect_ratio value 4:3 is not allowed"}, {}, ErrorKind.INVALID_INPUT),
        (404, {"error": f"Model {MODEL} not found"}, {}, ErrorKind.UNKNOWN),
        (
            405,
            "<html><body><h1>405 Not Allowed</h1></body></html>",
            {"Content-Type": "text/html"},
            ErrorKind.UNKNOWN,
        ),
        (410, {"error": "This model has been retired"}, {}, ErrorKind.UNKNOWN),
        (
            429,
            {"error": "rate_limit_exceeded"},
            {"x-rate-limit-reset-at-utc": "2027-01-15T08:00:17Z"},
            ErrorKind.RATE_LIMITED,
        ),
        (500, {"error": "Internal server error"}, {}, ErrorKind.TRANSIENT),
        (
            503,
            "<html>Service Unavailable</html>",
            {"Content-Type": "text/html"},
            ErrorKind.TRANSIENT,
        ),
    ],
)
async def test_create_errors_are_classified(
    double: SegmindDouble,
    make: Make,
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: ErrorKind,
) -> None:
    double.next_create("status", status, body, headers)
    reset_at = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    with pytest.raises(ProviderError) as info:
        await make("v2", now=reset_at).submit(PLAIN, webhook_url=None)
    error = info.value
    assert error.kind is kind and error.status_code == status and error.provider == "segmind"
    assert not error.outcome_unknown
    assert error.retry_after_s == (17.0 if kind is ErrorKind.RATE_LIMITED else None)
    if status == 405:
        assert "<" not in error.detail and "405 Not Allowed" in error.detail
    assert double.creates == 1 and double.creates_of(V1) == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-rate-limit-reset-at-utc": "2027-01-15T08:00:17Z"}, 17.0),
        ({"x-rate-limit-reset-at-utc": "2027-01-15T08:00:17"}, 17.0),
        ({"x-rate-limit-reset-at-utc": "2027-01-15T08:00:17.500+00:00"}, 17.5),
        ({"X-Rate-Limit-Reset-At-UTC": str(int(NOW) + 30)}, 30.0),
        ({"x-rate-limit-reset-at-utc": str(int(NOW * 1000) + 4500)}, 4.5),
        ({"x-rate-limit-reset-at-utc": iso_in(60)}, 60.0),
        ({"x-rate-limit-reset-at-utc": "12"}, 12.0),
        ({"x-rate-limit-reset-at-utc": "2027-01-15T07:59:00Z"}, 0.0),
        ({"x-rate-limit-reset-at-utc": "2099-01-01T00:00:00Z"}, 86400.0),
        ({"Retry-After": "5", "x-rate-limit-reset-at-utc": "2027-01-15T08:00:17Z"}, 5.0),
        ({"x-rate-limit-reset-at-utc": "soon"}, None),
        ({"x-rate-limit-reset-at-utc": "nan"}, None),
        ({}, None),
    ],
)
def test_rate_limit_reset_header(headers: dict[str, str], expected: float | None) -> None:
    assert reset_in_s(headers, NOW) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"request_id": "sg-', b"", b"[1, 2]", b'"text"', b'{"status": "QUEUED"}'],
)
async def test_malformed_and_truncated_create_replies(
    double: SegmindDouble, make: Make, body: bytes
) -> None:
    double.next_create("status", 200, body)
    with pytest.raises(ProviderError) as info:
        await make().submit(PLAIN, webhook_url=None)
    # Segmind answered 200: a billable job may exist although we cannot read its id
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown
    assert double.creates == 1 and double.creates_of(V1) == []


async def test_poll_errors(double: SegmindDouble, make: Make) -> None:
    provider = make(now=NOW)
    with pytest.raises(ProviderError) as info:
        await provider.poll(ProviderJob("sg-req-unknown"))
    assert info.value.kind is ErrorKind.NOT_FOUND
    with pytest.raises(ProviderError) as auth:
        await make(key="SG_wrong").poll(ProviderJob("sg-req-000001"))
    assert auth.value.kind is ErrorKind.AUTH
    double.next_poll(429, {"error": "rate_limit_exceeded"}, {"x-rate-limit-reset-at-utc": "9"})
    with pytest.raises(ProviderError) as limited:
        await provider.poll(ProviderJob("sg-req-000001"))
    assert limited.value.kind is ErrorKind.RATE_LIMITED and limited.value.retry_after_s == 9.0
    double.next_poll(502, b"<html>Bad Gateway</html>")
    with pytest.raises(ProviderError) as down:
        await provider.poll(ProviderJob("sg-req-000001"))
    assert down.value.kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"status": "PROCES', b"[]", b'{"status": 3}', b'{"state": "x"}']
)
async def test_malformed_and_truncated_poll_replies(
    double: SegmindDouble, make: Make, body: bytes
) -> None:
    double.next_poll(200, body)
    with pytest.raises(ProviderError) as info:
        await make().poll(ProviderJob("sg-req-000001"))
    assert info.value.kind is ErrorKind.UNKNOWN


# -- a create is never sent twice --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "failure"), [("auto", "reset"), ("v2", "reset"), ("auto", "hang")]
)
async def test_no_answer_after_send_is_not_retried(
    double: SegmindDouble, make: Make, mode: str, failure: str
) -> None:
    double.next_create(failure)
    with pytest.raises(ProviderError) as info:
        await make(mode, timeout_s=0.5).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1 and double.creates_of(V1) == []


@pytest.mark.parametrize("mode", ["auto", "v2", "v1"])
@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_timeout_on_create_is_an_unknown_outcome(
    double: SegmindDouble, make: Make, mode: str, status: int
) -> None:
    double.next_create("status", status, "<html><h1>504 Gateway Time-out</h1></html>")
    with pytest.raises(ProviderError) as info:
        await make(mode).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    assert info.value.status_code == status
    assert double.creates == 1  # and never a v1 call after a v2 gateway error


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_do_not_fall_back_to_v1(
    double: SegmindDouble, make: Make, status: int
) -> None:
    double.next_create("status", status, {"error": "Internal server error"})
    with pytest.raises(ProviderError) as info:
        await make("auto").submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown
    assert double.creates == 1 and double.creates_of(V1) == []


@pytest.mark.parametrize("mode", ["v2", "v1"])
async def test_connection_refused_is_retried_once_listening(
    make: Make, tmp_path: Path, mode: str
) -> None:
    port = free_port()
    late = SegmindDouble()
    provider = make(mode, base_url=f"http://127.0.0.1:{port}")

    async def start_late() -> None:
        await asyncio.sleep(0.1)
        await late.start(port)

    starter = asyncio.create_task(start_late())
    try:
        sub = await provider.submit(PLAIN, webhook_url=None)
        assert late.creates == 1 and len(late.creates_of(f"/{mode}/{MODEL}")) == 1
        assert sub.job.id == ("sg-req-000001" if mode == "v2" else "v1-sg-req-000001")
    finally:
        await starter
        await late.stop()


@pytest.mark.parametrize("mode", ["v2", "v1"])
async def test_connection_refused_forever_is_transient_not_unknown(make: Make, mode: str) -> None:
    provider = make(mode, base_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown


# -- v1: the synchronous fallback ------------------------------------------------------------


@pytest.mark.parametrize("missing", [404, 405])
async def test_v2_without_the_model_falls_back_to_one_v1_call(
    double: SegmindDouble, make: Make, http: ProviderHttp, tmp_path: Path, missing: int
) -> None:
    double.v2_missing = missing
    provider = make("auto")
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert len(double.creates_of(V2)) == 1 and len(double.creates_of(V1)) == 1
    assert double.creates == 2
    v2_create, v1_create = double.creates_of(V2)[0], double.creates_of(V1)[0]
    assert v1_create.json == v2_create.json
    assert v1_create.header("x-api-key") == API_KEY and v1_create.header("Authorization") is None
    clip = tmp_path / "segmind" / "segmind-v1-sg-req-000001.mp4"
    assert sub.job == ProviderJob("v1-sg-req-000001", {"api": "v1", "video_url": clip.as_uri()})
    assert sub.status.state is ProviderState.SUCCEEDED
    assert sub.status.video_url == clip.as_uri()
    # poll of a v1 job asks nothing and says the same
    before = len(double.requests)
    assert await provider.poll(sub.job) == sub.status
    assert len(double.requests) == before
    await download(
        http.session,
        sub.status.video_url,
        tmp_path / "out.mp4",
        max_bytes=10**7,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url], file_root=provider.files_dir),
    )
    assert (tmp_path / "out.mp4").read_bytes() == double.video_bytes
    # the adapter remembers: the next job goes straight to v1
    await provider.submit(PLAIN, webhook_url=None)
    assert len(double.creates_of(V2)) == 1 and len(double.creates_of(V1)) == 2


async def test_v2_mode_never_falls_back(double: SegmindDouble, make: Make) -> None:
    double.v2_missing = 404
    with pytest.raises(ProviderError) as info:
        await make("v2").submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.status_code == 404
    assert double.creates_of(V1) == []


@pytest.mark.parametrize(
    ("reply", "served_from_file"),
    [
        ("bytes", False),
        ("octet", False),
        ("base64", False),
        ("data_uri", False),
        ("output_url", True),
        ("video_url", True),
    ],
)
async def test_v1_sync_success_in_every_documented_form(
    double: SegmindDouble,
    make: Make,
    http: ProviderHttp,
    tmp_path: Path,
    reply: str,
    served_from_file: bool,
) -> None:
    double.v1_reply = reply
    double.v1_delay_s = 0.05
    provider = make("v1")
    sub = await provider.submit(MULTI, webhook_url=None)
    [create] = double.creates_of(V1)
    assert create.json["multi_prompt"][1] == {
        "prompt": "The fox runs across a snowy field",
        "duration": "5",
    }
    assert double.creates_of(V2) == [] and double.creates == 1
    status = sub.status
    assert status.state is ProviderState.SUCCEEDED and status.video_url is not None
    job_id = next(iter(double.jobs))
    if served_from_file:
        assert status.video_url == double.file_url(job_id) and clips(tmp_path) == []
        assert sub.job.id == f"v1-{job_id}"
    else:
        [name] = clips(tmp_path)
        assert status.video_url == (tmp_path / "segmind" / name).as_uri()
        if reply == "octet":  # no x-request-id: the adapter names the job itself
            assert re.fullmatch(r"segmind-v1-[0-9a-f]{24}\.mp4", name)
        else:
            assert name == f"segmind-v1-{job_id}.mp4" and sub.job.id == f"v1-{job_id}"
    size = await download(
        http.session,
        status.video_url,
        tmp_path / "out.mp4",
        max_bytes=10**7,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url], file_root=provider.files_dir),
    )
    assert (tmp_path / "out.mp4").read_bytes() == double.video_bytes
    assert size == len(double.video_bytes)
    assert await provider.poll(sub.job) == status


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (406, {"error": "Insufficient credits"}, ErrorKind.OUT_OF_FUNDS),
        (400, {"error": "duration must be a string"}, ErrorKind.INVALID_INPUT),
        (422, {"status": "FAILED", "error": "NSFW content detected"}, ErrorKind.CONTENT_POLICY),
        (500, {"error": "Internal server error"}, ErrorKind.TRANSIENT),
        (503, "<html>Service Unavailable</html>", ErrorKind.TRANSIENT),
    ],
)
async def test_v1_errors_are_classified(
    double: SegmindDouble, make: Make, tmp_path: Path, status: int, body: Any, kind: ErrorKind
) -> None:
    double.next_create("status", status, body)
    with pytest.raises(ProviderError) as info:
        await make("v1").submit(PLAIN, webhook_url=None)
    assert info.value.kind is kind and info.value.status_code == status
    assert not info.value.outcome_unknown
    assert double.creates == 1 and clips(tmp_path) == []


@pytest.mark.parametrize("failure", ["reset", "hang"])
async def test_v1_no_answer_is_unknown_and_not_retried(
    double: SegmindDouble, make: Make, failure: str
) -> None:
    double.next_create(failure)
    with pytest.raises(ProviderError) as info:
        await make("v1", v1_timeout_s=0.5).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_v1_truncated_video_is_unknown_and_leaves_nothing(
    double: SegmindDouble, make: Make, tmp_path: Path
) -> None:
    double.v1_reply = "truncated"
    with pytest.raises(ProviderError) as info:
        await make("v1").submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown
    assert clips(tmp_path) == [] and double.creates == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"output": "https://images.segm',
        b'{"status": "COMPLETED"}',
        b'{"video": "not base64 at all!"}',
        b'{"video": "aGVsbG8gd29ybGQsIG5vdCBhIHZpZGVv"}',
        b"[]",
    ],
)
async def test_v1_unreadable_json_is_unknown(
    double: SegmindDouble, make: Make, tmp_path: Path, body: bytes
) -> None:
    double.next_create("status", 200, body, {"Content-Type": "application/json"})
    with pytest.raises(ProviderError) as info:
        await make("v1").submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown
    assert clips(tmp_path) == []


async def test_v1_html_200_is_unknown(double: SegmindDouble, make: Make) -> None:
    double.next_create("status", 200, "<html>maintenance</html>", {"Content-Type": "text/html"})
    with pytest.raises(ProviderError) as info:
        await make("v1").submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown


async def test_v1_old_clips_are_pruned(double: SegmindDouble, make: Make, tmp_path: Path) -> None:
    folder = tmp_path / "segmind"
    folder.mkdir()
    old, fresh = folder / "segmind-v1-old.mp4", folder / "segmind-v1-fresh.mp4"
    for path in (old, fresh):
        path.write_bytes(b"x")
    os.utime(old, (NOW - 2 * 86400, NOW - 2 * 86400))
    os.utime(fresh, (NOW - 3600, NOW - 3600))
    await make("v1", now=NOW).submit(PLAIN, webhook_url=None)
    assert clips(tmp_path) == ["segmind-v1-fresh.mp4", "segmind-v1-sg-req-000001.mp4"]


async def test_v1_unwritable_work_dir_is_a_provider_error(
    double: SegmindDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    provider = SegmindProvider(
        SegmindSettings(api_key=SecretStr(API_KEY), base_url=double.base_url, api_mode="v1"),
        http,
        work_dir=blocker / "sub",
    )
    try:
        with pytest.raises(ProviderError) as info:
            await provider.submit(PLAIN, webhook_url=None)
        assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown
        assert "cannot save the v1 clip" in info.value.detail
    finally:
        await provider.close()


async def test_v1_default_work_dir_is_a_private_temp_dir(
    double: SegmindDouble, http: ProviderHttp
) -> None:
    provider = SegmindProvider(
        SegmindSettings(api_key=SecretStr(API_KEY), base_url=double.base_url, api_mode="v1"),
        http,
    )
    try:
        sub = await provider.submit(PLAIN, webhook_url=None)
        folder = provider.work_dir
        assert folder.name.startswith("klingbot-segmind-")
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        assert sub.status.video_url == (folder / "segmind-v1-sg-req-000001.mp4").resolve().as_uri()
    finally:
        await provider.close()
        shutil.rmtree(provider.work_dir, ignore_errors=True)


# -- webhooks --------------------------------------------------------------------------------


def test_segmind_sends_no_webhooks() -> None:
    assert CAPABILITIES["segmind"].webhooks == "none"
    body = json.dumps({"request_id": "sg-1", "status": "COMPLETED"}).encode()
    with pytest.raises(WebhookParseError) as info:
        parser().parse_webhook({"Content-Type": "application/json"}, body)
    assert str(info.value) == "Segmind does not send webhooks" and info.value.http_status == 400


# -- parsers never raise anything but the adapter's error type --------------------------------

status_like = st.fixed_dictionaries(
    {"status": st.sampled_from(["COMPLETED", "FAILED", "QUEUED", "PROCESSING", "x"]) | json_values},
    optional={
        "output": json_values,
        "video": json_values,
        "error": json_values,
        "message": json_values,
    },
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values | status_like)
def test_status_parser_only_raises_provider_error(data: Any) -> None:
    if not isinstance(data, dict):
        return
    with contextlib.suppress(ProviderError):
        parser().parse_status(data)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=json_values
    | status_like
    | st.dictionaries(
        st.sampled_from(["video", "output", "data", "image"]),
        st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
        | st.binary(max_size=40).map(
            lambda b: base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + b).decode()
        )
        | json_values,
    )
)
def test_v1_reply_reader_only_raises_provider_error(data: Any) -> None:
    with contextlib.suppress(ProviderError):
        url, video = read_v1_json(data)
        assert (url is None) != (video is None)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=200) | status_like.map(lambda v: json.dumps(v).encode()),
    headers=st.dictionaries(
        st.sampled_from(["Content-Type", "x-api-key", "x"]), st.text(max_size=30)
    ),
)
def test_webhook_parser_only_raises_webhook_error(body: bytes, headers: dict[str, str]) -> None:
    with pytest.raises(WebhookRefused):
        parser().parse_webhook(headers, body)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(max_size=40), now=st.floats(min_value=0, max_value=4e9))
def test_reset_header_reader_never_raises(value: str, now: float) -> None:
    found = reset_in_s({"x-rate-limit-reset-at-utc": value}, now)
    assert found is None or 0.0 <= found <= 86400.0

"""PixelDojo adapter against its loopback double: wire format, statuses, errors, webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.download import DownloadPolicy, download
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError, WebhookRefused
from bot.providers.http import ProviderHttp
from bot.providers.pixeldojo import PixelDojoProvider
from bot.settings import PixelDojoSettings
from tests.provider_doubles.pixeldojo import API_KEY, PixelDojoDouble
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
RUN_PATH = "/api/v1/models/kling-video-v3-pro-text/run"
HOOK = "https://bot.example/webhooks/pixeldojo/tok"


@pytest.fixture
async def double() -> AsyncIterator[PixelDojoDouble]:
    async with PixelDojoDouble() as d:
        yield d


def adapter(
    double: PixelDojoDouble, http: ProviderHttp, *, key: str = API_KEY
) -> PixelDojoProvider:
    return PixelDojoProvider(
        PixelDojoSettings(api_key=SecretStr(key), base_url=double.api_base), http
    )


PARSER = PixelDojoProvider(PixelDojoSettings(), NO_HTTP)


def parser() -> PixelDojoProvider:
    """An adapter used only to parse (parsers are pure; one instance is shared)."""
    return PARSER


# -- the request on the wire ------------------------------------------------------------------


async def test_plain_request_on_the_wire(double: PixelDojoDouble, http: ProviderHttp) -> None:
    sub = await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    [create] = double.creates_of(RUN_PATH)
    assert create.path == RUN_PATH and create.query == {}
    assert create.header("Authorization") == f"Bearer {API_KEY}"
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "prompt": "A red fox running through snow",
        "duration": 5,
        "aspect_ratio": "16:9",
        "generate_audio": True,
        "webhook_url": HOOK,
    }
    assert sub.job.id == "job_000001"
    assert dict(sub.job.data) == {
        "status_url": f"{double.api_base}/jobs/job_000001",
        "credit_cost": "40",
    }
    assert sub.status.state is ProviderState.QUEUED and sub.status.vendor_status == "pending"


async def test_create_reply_values_are_kept(double: PixelDojoDouble, http: ProviderHttp) -> None:
    reply = {
        "jobId": "job_abc123",
        "status": "pending",
        "statusUrl": f"{double.api_base}/jobs/job_abc123",
        "creditCost": 1234567,
        "creditsRemaining": 95,
        "expiresAt": "2025-01-23T12:00:00Z",
    }
    double.next_create("status", 202, reply)
    sub = await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert sub.job.id == "job_abc123"
    assert dict(sub.job.data) == {
        "status_url": f"{double.api_base}/jobs/job_abc123",
        "credit_cost": "1234567",
    }


async def test_all_options_on_the_wire(double: PixelDojoDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(PLAIN_FULL, webhook_url=None)
    assert double.creates_of(RUN_PATH)[0].json == {
        "prompt": "A lighthouse at dusk, waves crashing",
        "negative_prompt": "blurry, watermark",
        "duration": 10,
        "aspect_ratio": "9:16",
        "generate_audio": False,
        "cfg_scale": 0.7,
        "shot_type": "customize",
    }


async def test_multishot_request_on_the_wire(double: PixelDojoDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(MULTI, webhook_url=None)
    assert double.creates_of(RUN_PATH)[0].json == {
        "prompt": "A fox wakes up in its den\nThe fox runs across a snowy field",
        "multi_prompt": [
            {"prompt": "A fox wakes up in its den", "duration": 3},
            {"prompt": "The fox runs across a snowy field", "duration": 5},
        ],
        "duration": 8,
        "aspect_ratio": "1:1",
        "generate_audio": True,
    }


async def test_voice_request_on_the_wire(double: PixelDojoDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(VOICE, webhook_url=None)
    assert double.creates_of(RUN_PATH)[0].json == {
        "prompt": "<<<voice_1>>> says hello to <<<voice_2>>> on a park bench",
        "voice_ids": ["voice_123456", "voice_abcdef"],
        "duration": 5,
        "aspect_ratio": "16:9",
        "generate_audio": True,
    }


async def test_unsupported_request_is_refused_before_sending(
    double: PixelDojoDouble, http: ProviderHttp
) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(
            PLAIN.model_copy(update={"resolution": "720p"}), webhook_url=None
        )
    assert info.value.kind is ErrorKind.INVALID_INPUT and not info.value.outcome_unknown
    assert "1080p" in info.value.detail
    assert double.creates == 0 and double.requests == []


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("pending", ProviderState.QUEUED),
        ("queued", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("running", ProviderState.RUNNING),
        ("in_progress", ProviderState.RUNNING),
        ("completed", ProviderState.SUCCEEDED),
        ("succeeded", ProviderState.SUCCEEDED),
        ("COMPLETED", ProviderState.SUCCEEDED),
        ("failed", ProviderState.FAILED),
        ("error", ProviderState.FAILED),
        ("expired", ProviderState.FAILED),
        ("cancelled", ProviderState.CANCELLED),
        ("canceled", ProviderState.CANCELLED),
    ],
)
def test_every_status_word(word: str, state: ProviderState) -> None:
    status = parser().parse_status(
        {"jobId": "job_1", "status": word, "output": {"video": "https://temp.pixeldojo.ai/v.mp4"}}
    )
    assert status.state is state and status.vendor_status == word.lower()
    if state is ProviderState.SUCCEEDED:
        assert status.video_url == "https://temp.pixeldojo.ai/v.mp4"
        assert status.progress_pct == 100
    else:
        assert status.video_url is None


def test_unknown_status_word_is_an_error() -> None:
    with pytest.raises(ProviderError) as info:
        parser().parse_status({"jobId": "job_1", "status": "teleported"})
    assert info.value.kind is ErrorKind.UNKNOWN and "teleported" in info.value.detail


@pytest.mark.parametrize("output", [None, {}, {"video": None}, {"video": ""}, {"video": "ftp://x"}])
def test_completed_without_a_video_is_still_running(output: Any) -> None:
    status = parser().parse_status({"jobId": "job_1", "status": "completed", "output": output})
    assert status.state is ProviderState.RUNNING and status.video_url is None
    assert status.vendor_status == "completed"


def test_progress_is_read_when_present() -> None:
    status = parser().parse_status({"status": "processing", "progress": 42})
    assert status.state is ProviderState.RUNNING and status.progress_pct == 42
    assert parser().parse_status({"status": "processing", "progress": "nope"}).progress_pct is None


async def test_poll_through_to_success_and_download(
    double: PixelDojoDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    seen = [(await provider.poll(sub.job)).state for _ in range(3)]
    assert seen == [ProviderState.QUEUED, ProviderState.RUNNING, ProviderState.SUCCEEDED]
    final = await provider.poll(sub.job)
    assert final.video_url == double.file_url(sub.job.id)
    polls = [r for r in double.requests if r.method == "GET" and r.path.startswith("/api/v1/jobs")]
    assert [r.path for r in polls] == ["/api/v1/jobs/job_000001"] * 4
    assert all(r.header("Authorization") == f"Bearer {API_KEY}" for r in polls)
    size = await download(
        http.session,
        final.video_url or "",
        tmp_path / "v.mp4",
        max_bytes=10**7,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url]),
    )
    assert (tmp_path / "v.mp4").read_bytes() == double.video_bytes
    assert size == len(double.video_bytes)


async def test_poll_without_status_url_uses_the_jobs_path(
    double: PixelDojoDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    status = await provider.poll(ProviderJob(sub.job.id))
    assert status.state is ProviderState.QUEUED
    assert double.requests[-1].path == "/api/v1/jobs/job_000001"


async def test_status_url_on_another_host_is_never_used(
    double: PixelDojoDouble, http: ProviderHttp
) -> None:
    double.status_host = "http://attacker.invalid/api/v1"
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert "status_url" not in sub.job.data
    forged = ProviderJob(sub.job.id, {"status_url": "http://attacker.invalid/jobs/job_000001"})
    assert provider.status_url(forged) == f"{double.api_base}/jobs/job_000001"
    assert (await provider.poll(forged)).state is ProviderState.QUEUED


def test_job_ids_are_quoted_into_the_path() -> None:
    provider = PixelDojoProvider(PixelDojoSettings(base_url="https://pd.example/api/v1"), NO_HTTP)
    assert provider.status_url(ProviderJob("../admin?x=1")) == (
        "https://pd.example/api/v1/jobs/..%2Fadmin%3Fx%3D1"
    )


async def test_expired_result_url(
    double: PixelDojoDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    double.jobs[sub.job.id].script = ["completed"]
    status = await provider.poll(sub.job)
    assert status.video_url == double.file_url(sub.job.id)
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
    assert not list(tmp_path.iterdir()), "no partial file is left behind"


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("generation failed", ErrorKind.UNKNOWN),
        ("Your prompt was flagged by the content moderation system", ErrorKind.CONTENT_POLICY),
        ("NSFW content detected in output", ErrorKind.CONTENT_POLICY),
        ("Invalid parameter: duration", ErrorKind.INVALID_INPUT),
        ("Upstream timeout", ErrorKind.TRANSIENT),
        ("Insufficient credits", ErrorKind.OUT_OF_FUNDS),
    ],
)
async def test_job_failures_are_classified(
    double: PixelDojoDouble, http: ProviderHttp, message: str, kind: ErrorKind
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = double.jobs[sub.job.id]
    job.script, job.error = ["failed"], message
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.vendor_status == "failed"
    assert status.error is not None
    assert status.error.kind is kind and status.error.detail == message


@pytest.mark.parametrize(
    ("data", "kind", "code", "detail"),
    [
        (
            {
                "status": "failed",
                "error": {"code": "SAFETY", "message": "blocked by safety filter"},
            },
            ErrorKind.CONTENT_POLICY,
            "SAFETY",
            "blocked by safety filter",
        ),
        (
            {"status": "failed", "errorMessage": "server overloaded", "errorCode": "E503"},
            ErrorKind.TRANSIENT,
            "E503",
            "server overloaded",
        ),
        ({"status": "error"}, ErrorKind.UNKNOWN, None, "the job failed"),
        (
            {"status": "expired", "message": "job expired"},
            ErrorKind.RESULT_EXPIRED,
            None,
            "job expired",
        ),
    ],
)
def test_other_failure_shapes(
    data: dict[str, Any], kind: ErrorKind, code: str | None, detail: str
) -> None:
    status = parser().parse_status(data)
    assert status.state is ProviderState.FAILED and status.error is not None
    assert status.error.kind is kind
    assert status.error.vendor_code == code and status.error.detail == detail
    assert status.error.provider == "pixeldojo"


async def test_cancel_is_not_supported(double: PixelDojoDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    before = len(double.requests)
    assert await provider.cancel(sub.job) is False
    assert len(double.requests) == before
    assert provider.capabilities.cancel is False


# -- HTTP errors on create and poll ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (400, {"error": "Invalid JSON body"}, {}, ErrorKind.INVALID_INPUT),
        (401, {"error": "Invalid API key"}, {}, ErrorKind.AUTH),
        (
            402,
            {"error": "Insufficient credits", "credits_remaining": 3},
            {},
            ErrorKind.OUT_OF_FUNDS,
        ),
        (422, {"error": "Validation error", "details": ["duration"]}, {}, ErrorKind.INVALID_INPUT),
        (
            422,
            {"error": "Prompt violates our content policy"},
            {},
            ErrorKind.CONTENT_POLICY,
        ),
        (429, {"error": "Rate limit exceeded"}, {"Retry-After": "17"}, ErrorKind.RATE_LIMITED),
        (500, {"error": "internal"}, {}, ErrorKind.TRANSIENT),
        (503, "<html>Service Unavailable</html>", {}, ErrorKind.TRANSIENT),
    ],
)
async def test_create_errors_are_classified(
    double: PixelDojoDouble,
    http: ProviderHttp,
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: ErrorKind,
) -> None:
    double.next_create("status", status, body, headers)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.kind is kind and info.value.status_code == status
    assert not info.value.outcome_unknown
    assert info.value.retry_after_s == (17 if kind is ErrorKind.RATE_LIMITED else None)
    assert double.creates == 1


async def test_real_out_of_credits_and_bad_key(double: PixelDojoDouble, http: ProviderHttp) -> None:
    double.credits = 39
    with pytest.raises(ProviderError) as funds:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert funds.value.kind is ErrorKind.OUT_OF_FUNDS and funds.value.status_code == 402
    with pytest.raises(ProviderError) as auth:
        await adapter(double, http, key="pd_wrong").submit(PLAIN, webhook_url=None)
    assert auth.value.kind is ErrorKind.AUTH and auth.value.status_code == 401
    assert double.jobs == {}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"jobId": "job_0000', b"", b"[1, 2]", b'"text"', b'{"status": "pending"}'],
)
async def test_malformed_and_truncated_create_replies(
    double: PixelDojoDouble, http: ProviderHttp, body: bytes
) -> None:
    double.next_create("status", 202, body)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.status_code == 202
    assert info.value.outcome_unknown, "a 2xx create may have made a job: never resend blindly"
    assert double.creates == 1


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (200, b"{not json", {}, ErrorKind.UNKNOWN),
        (200, b'{"jobId": "job_000001", "status": "compl', {}, ErrorKind.UNKNOWN),
        (200, b"[]", {}, ErrorKind.UNKNOWN),
        (429, {"error": "Too many requests"}, {"Retry-After": "9"}, ErrorKind.RATE_LIMITED),
        (502, "<html>Bad Gateway</html>", {}, ErrorKind.TRANSIENT),
        (404, {"error": "Job not found"}, {}, ErrorKind.NOT_FOUND),
    ],
)
async def test_poll_errors_are_classified(
    double: PixelDojoDouble,
    http: ProviderHttp,
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: ErrorKind,
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    double.next_poll(status, body, headers)
    with pytest.raises(ProviderError) as info:
        await provider.poll(sub.job)
    assert info.value.kind is kind
    if kind is ErrorKind.RATE_LIMITED:
        assert info.value.retry_after_s == 9
    assert (await provider.poll(sub.job)).state is ProviderState.QUEUED


async def test_poll_unknown_job_and_bad_key(double: PixelDojoDouble, http: ProviderHttp) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).poll(ProviderJob("job_unknown"))
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.status_code == 404
    with pytest.raises(ProviderError) as auth:
        await adapter(double, http, key="pd_wrong").poll(ProviderJob("job_000001"))
    assert auth.value.kind is ErrorKind.AUTH


# -- a create is never sent twice --------------------------------------------------------------


async def test_reset_after_send_is_not_retried(double: PixelDojoDouble, http: ProviderHttp) -> None:
    double.next_create("reset")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_timeout_after_send_is_not_retried(
    double: PixelDojoDouble, http: ProviderHttp
) -> None:
    double.next_create("hang")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_connection_refused_is_retried_once_listening(http: ProviderHttp) -> None:
    port = free_port()
    double = PixelDojoDouble()
    provider = PixelDojoProvider(
        PixelDojoSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{port}/api/v1"),
        http,
    )

    async def start_late() -> None:
        await asyncio.sleep(0.1)
        await double.start(port)

    starter = asyncio.create_task(start_late())
    try:
        sub = await provider.submit(PLAIN, webhook_url=None)
        assert sub.job.id == "job_000001" and double.creates == 1
    finally:
        await starter
        await double.stop()


async def test_connection_refused_forever_is_transient_not_unknown(http: ProviderHttp) -> None:
    provider = PixelDojoProvider(
        PixelDojoSettings(
            api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{free_port()}/api/v1"
        ),
        http,
    )
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown


# -- webhooks (unsigned: the per-job URL token authenticates them) ----------------------------


async def test_real_webhook_is_accepted(
    double: PixelDojoDouble, http: ProviderHttp, receiver: Any
) -> None:
    url, received = receiver
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=url)
    assert double.jobs[sub.job.id].webhook_url == url
    assert await double.send_webhook(double.jobs[sub.job.id]) == 200
    [(headers, body)] = received
    event = provider.parse_webhook(headers, body)
    assert event.provider_job_id == sub.job.id and event.delivery_id is None
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    assert event.status.video_url == double.file_url(sub.job.id)


async def test_failure_webhook(double: PixelDojoDouble, http: ProviderHttp, receiver: Any) -> None:
    url, received = receiver
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=url)
    job = double.jobs[sub.job.id]
    job.error = "Content flagged: nudity"
    await double.send_webhook(job, success=False)
    event = provider.parse_webhook(*received[0])
    assert event.provider_job_id == sub.job.id
    assert event.status is not None and event.status.state is ProviderState.FAILED
    assert event.status.error is not None and event.status.error.kind is ErrorKind.CONTENT_POLICY


@pytest.mark.parametrize(
    ("body", "job_id", "state"),
    [
        ({"id": "job_7", "status": "processing"}, "job_7", ProviderState.RUNNING),
        (
            {
                "event": "job.completed",
                "data": {
                    "jobId": "job_8",
                    "status": "completed",
                    "output": {"video": "https://t.example/v.mp4"},
                },
            },
            "job_8",
            ProviderState.SUCCEEDED,
        ),
        (
            {"job": {"jobId": "job_9", "status": "failed", "error": "boom"}},
            "job_9",
            ProviderState.FAILED,
        ),
    ],
)
def test_other_webhook_shapes(body: dict[str, Any], job_id: str, state: ProviderState) -> None:
    event = parser().parse_webhook({}, json.dumps(body).encode())
    assert event.provider_job_id == job_id
    assert event.status is not None and event.status.state is state


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"completed"',
        b'{"jobId": "job_1", "status": "compl',
        b'{"status": "completed", "output": {"video": "https://x/v.mp4"}}',
        b'{"jobId": "job_1"}',
        b'{"jobId": "job_1", "status": "teleported"}',
        b'{"jobId": {"nested": 1}, "status": "completed"}',
        b"\xff\xfe\x00garbage",
    ],
)
def test_garbage_webhooks_are_refused(body: bytes) -> None:
    with pytest.raises(WebhookParseError) as info:
        parser().parse_webhook({"Content-Type": "application/json"}, body)
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    "value", [float("inf"), float("-inf"), float("nan"), "Infinity", "1e999", True]
)
def test_non_finite_progress_is_ignored(value: Any) -> None:
    status = parser().parse_status({"id": "t1", "status": "processing", "progress": value})
    assert status.state is ProviderState.RUNNING and status.progress_pct is None


# -- parsers never raise anything but the adapter's error type --------------------------------

status_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(
            ["pending", "processing", "completed", "failed", "expired", "cancelled", "x"]
        )
        | json_values
    },
    optional={
        "jobId": st.text(max_size=10) | json_values,
        "output": json_values | st.fixed_dictionaries({"video": json_values}),
        "error": json_values,
        "progress": json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=status_like | st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_status_parser_only_raises_provider_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(ProviderError):
        status = parser().parse_status(data)
        assert status.state is not ProviderState.SUCCEEDED or status.video_url


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | status_like.map(lambda v: json.dumps(v).encode())
    | status_like.map(lambda v: json.dumps({"data": v}).encode()),
)
def test_webhook_parser_only_raises_webhook_error(body: bytes) -> None:
    with contextlib.suppress(WebhookRefused):
        event = parser().parse_webhook({}, body)
        assert event.provider_job_id

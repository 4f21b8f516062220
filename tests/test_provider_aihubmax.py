"""AIHubMax adapter against its loopback double: wire format, statuses, errors, callbacks."""

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

from bot.providers.aihubmax import AIHubMaxProvider
from bot.providers.base import ProviderJob, ProviderState
from bot.providers.download import DownloadPolicy, download
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError, WebhookRefused
from bot.providers.http import ProviderHttp
from bot.request import Shot
from bot.settings import AIHubMaxSettings
from tests.provider_doubles.aihubmax import API_KEY, AIHubMaxDouble
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
CREATE_PATH = "/v1/videos/generations"
HOOK = "https://bot.example/webhooks/aihubmax/tok"
FIRST_ID = "task-unified-1757165031-job00001"
# AIHubMax has no cfg_scale or shot type, and makes 5 or 10 second videos only.
FULL_SUPPORTED = PLAIN_FULL.model_copy(update={"cfg_scale": None, "shot_type": None})
MULTI_10 = MULTI.model_copy(
    update={
        "duration_s": 10,
        "shots": (
            Shot(prompt="A fox wakes up in its den", duration_s=4),
            Shot(prompt="The fox runs across a snowy field", duration_s=6),
        ),
    }
)


@pytest.fixture
async def double() -> AsyncIterator[AIHubMaxDouble]:
    async with AIHubMaxDouble() as d:
        yield d


def adapter(double: AIHubMaxDouble, http: ProviderHttp, *, key: str = API_KEY) -> AIHubMaxProvider:
    return AIHubMaxProvider(
        AIHubMaxSettings(api_key=SecretStr(key), base_url=double.api_base), http
    )


PARSER = AIHubMaxProvider(AIHubMaxSettings(), NO_HTTP)


def parser() -> AIHubMaxProvider:
    """An adapter used only to parse (parsers are pure; one instance is shared)."""
    return PARSER


# -- the request on the wire ------------------------------------------------------------------


async def test_plain_request_on_the_wire(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    sub = await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    [create] = double.creates_of(CREATE_PATH)
    assert create.path == CREATE_PATH and create.query == {}
    assert create.header("Authorization") == f"Bearer {API_KEY}"
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "model": "kling-v3-text-to-video",
        "prompt": "A red fox running through snow",
        "resolution": "1080p",
        "duration": 5,
        "aspect_ratio": "16:9",
        "generate_audio": True,
        "callback_url": HOOK,
    }
    assert sub.job.id == FIRST_ID and dict(sub.job.data) == {"credits_reserved": "270000"}
    assert sub.status.state is ProviderState.QUEUED and sub.status.vendor_status == "pending"
    assert sub.status.progress_pct == 0 and sub.status.eta_s == 300


async def test_create_reply_values_are_kept(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    reply = {
        "id": "task-unified-1757165031-uyujaw3d",
        "object": "video.generation.task",
        "status": "processing",
        "progress": 3,
        "usage": {"credits_reserved": 12345678},
    }
    double.next_create("status", 200, reply)
    sub = await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert sub.job.id == "task-unified-1757165031-uyujaw3d"
    assert dict(sub.job.data) == {"credits_reserved": "12345678"}
    assert sub.status.state is ProviderState.RUNNING and sub.status.progress_pct == 3
    assert sub.status.eta_s is None


async def test_supported_options_on_the_wire(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(FULL_SUPPORTED, webhook_url=None)
    assert double.creates_of(CREATE_PATH)[0].json == {
        "model": "kling-v3-text-to-video",
        "prompt": "A lighthouse at dusk, waves crashing",
        "negative_prompt": "blurry, watermark",
        "resolution": "1080p",
        "duration": 10,
        "aspect_ratio": "9:16",
        "generate_audio": False,
    }


@pytest.mark.parametrize(("resolution", "sent"), [("720p", "720p"), ("4k", "4k"), (None, "1080p")])
async def test_resolution_on_the_wire(
    double: AIHubMaxDouble, http: ProviderHttp, resolution: str | None, sent: str
) -> None:
    await adapter(double, http).submit(
        PLAIN.model_copy(update={"resolution": resolution}), webhook_url=None
    )
    assert double.creates_of(CREATE_PATH)[0].json["resolution"] == sent


async def test_multishot_request_on_the_wire(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(MULTI_10, webhook_url=None)
    assert double.creates_of(CREATE_PATH)[0].json == {
        "model": "kling-v3-text-to-video",
        "prompt": "A fox wakes up in its den\nThe fox runs across a snowy field",
        "multi_prompt": [
            {"prompt": "A fox wakes up in its den", "duration": 4},
            {"prompt": "The fox runs across a snowy field", "duration": 6},
        ],
        "resolution": "1080p",
        "duration": 10,
        "aspect_ratio": "1:1",
        "generate_audio": True,
    }


async def test_voice_request_on_the_wire(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(VOICE, webhook_url=None)
    assert double.creates_of(CREATE_PATH)[0].json == {
        "model": "kling-v3-text-to-video",
        "prompt": "<<<voice_1>>> says hello to <<<voice_2>>> on a park bench",
        "voice_ids": ["voice_123456", "voice_abcdef"],
        "resolution": "1080p",
        "duration": 5,
        "aspect_ratio": "16:9",
        "generate_audio": True,
    }


@pytest.mark.parametrize(
    ("request_name", "words"),
    [
        ("PLAIN_FULL", ["cfg_scale", "shot type"]),
        ("MULTI", ["5 or 10-second"]),
        ("PLAIN_7S", ["5 or 10-second"]),
    ],
)
async def test_unsupported_requests_are_refused_before_sending(
    double: AIHubMaxDouble, http: ProviderHttp, request_name: str, words: list[str]
) -> None:
    request = {
        "PLAIN_FULL": PLAIN_FULL,
        "MULTI": MULTI,
        "PLAIN_7S": PLAIN.model_copy(update={"duration_s": 7}),
    }[request_name]
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(request, webhook_url=HOOK)
    assert info.value.kind is ErrorKind.INVALID_INPUT and not info.value.outcome_unknown
    assert all(word in info.value.detail for word in words), info.value.detail
    assert double.creates == 0 and double.requests == []


# -- the callback URL, when AIHubMax refuses it -----------------------------------------------


async def test_refused_callback_url_is_dropped_and_the_job_polled(
    double: AIHubMaxDouble, http: ProviderHttp, caplog: pytest.LogCaptureFixture
) -> None:
    double.accept_callback = False
    sub = await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    first, second = double.creates_of(CREATE_PATH)
    assert first.json["callback_url"] == HOOK
    assert "callback_url" not in second.json
    assert {k: v for k, v in first.json.items() if k != "callback_url"} == second.json
    assert double.creates == 2 and list(double.jobs) == [sub.job.id]
    assert double.jobs[sub.job.id].webhook_url is None
    assert "refused callback_url (HTTP 400" in caplog.text


async def test_plain_http_callback_is_refused_then_dropped(
    double: AIHubMaxDouble, http: ProviderHttp
) -> None:
    sub = await adapter(double, http).submit(PLAIN, webhook_url="http://bot.example/hook")
    assert double.creates == 2 and list(double.jobs) == [sub.job.id]
    assert "callback_url" not in double.creates_of(CREATE_PATH)[1].json


async def test_other_refusals_are_not_resent(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    double.next_create(
        "status",
        400,
        {
            "error": {
                "code": 400,
                "message": "prompt too long",
                "type": "invalid_request_error",
                "param": "prompt",
            }
        },
    )
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    assert info.value.kind is ErrorKind.INVALID_INPUT and double.creates == 1


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("pending", ProviderState.QUEUED),
        ("queued", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("running", ProviderState.RUNNING),
        ("completed", ProviderState.SUCCEEDED),
        ("succeeded", ProviderState.SUCCEEDED),
        ("Completed", ProviderState.SUCCEEDED),
        ("failed", ProviderState.FAILED),
        ("error", ProviderState.FAILED),
        ("cancelled", ProviderState.CANCELLED),
        ("canceled", ProviderState.CANCELLED),
    ],
)
def test_every_status_word(word: str, state: ProviderState) -> None:
    status = parser().parse_status(
        {"id": "t1", "status": word, "progress": 30, "results": ["https://cdn.example/v.mp4"]}
    )
    assert status.state is state and status.vendor_status == word.lower()
    if state is ProviderState.SUCCEEDED:
        assert status.video_url == "https://cdn.example/v.mp4" and status.progress_pct == 100
    elif state in (ProviderState.QUEUED, ProviderState.RUNNING):
        assert status.progress_pct == 30 and status.video_url is None


def test_unknown_status_word_is_an_error() -> None:
    with pytest.raises(ProviderError) as info:
        parser().parse_status({"id": "t1", "status": "teleported"})
    assert info.value.kind is ErrorKind.UNKNOWN and "teleported" in info.value.detail


@pytest.mark.parametrize(
    ("data", "url"),
    [
        ({"results": ["https://cdn.example/a.mp4"]}, "https://cdn.example/a.mp4"),
        ({"results": [{"url": "https://cdn.example/b.mp4"}]}, "https://cdn.example/b.mp4"),
        (
            {"results": [], "result_data": [{"video_url": "https://cdn.example/c.mp4"}]},
            "https://cdn.example/c.mp4",
        ),
        (
            {"results": None, "result_data": [{"url": "https://cdn.example/d.mp4"}]},
            "https://cdn.example/d.mp4",
        ),
    ],
)
def test_every_result_shape(data: dict[str, Any], url: str) -> None:
    status = parser().parse_status({"id": "t1", "status": "completed", **data})
    assert status.state is ProviderState.SUCCEEDED and status.video_url == url


@pytest.mark.parametrize(
    "results", [None, [], [None], [{}], [{"url": None}], [""], "not-a-url", {"url": "ftp://x"}]
)
def test_completed_without_results_is_not_terminal(results: Any) -> None:
    status = parser().parse_status(
        {"id": "t1", "status": "completed", "progress": 97, "results": results}
    )
    assert status.state is ProviderState.RUNNING and not status.state.is_terminal
    assert status.progress_pct == 97 and status.video_url is None
    assert status.vendor_status == "completed"


@pytest.mark.parametrize("result_format", ["objects", "strings", "result_data"])
async def test_poll_through_to_success_and_download(
    double: AIHubMaxDouble, http: ProviderHttp, tmp_path: Path, result_format: str
) -> None:
    double.result_format = result_format
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    double.jobs[sub.job.id].script = ["pending", "processing", "completed_no_results", "completed"]
    seen = [await provider.poll(sub.job) for _ in range(4)]
    assert [(s.state, s.vendor_status, s.progress_pct) for s in seen] == [
        (ProviderState.QUEUED, "pending", 0),
        (ProviderState.RUNNING, "processing", 45),
        (ProviderState.RUNNING, "completed", 99),
        (ProviderState.SUCCEEDED, "completed", 100),
    ]
    url = seen[-1].video_url
    assert url == double.file_url(sub.job.id)
    polls = [r for r in double.requests if r.method == "GET" and r.path.startswith("/v1/tasks/")]
    assert [r.path for r in polls] == [f"/v1/tasks/{FIRST_ID}"] * 4
    assert all(r.header("Authorization") == f"Bearer {API_KEY}" for r in polls)
    size = await download(
        http.session,
        url or "",
        tmp_path / "v.mp4",
        max_bytes=10**7,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url]),
    )
    assert (tmp_path / "v.mp4").read_bytes() == double.video_bytes
    assert size == len(double.video_bytes)


async def test_expired_result_url(
    double: AIHubMaxDouble, http: ProviderHttp, tmp_path: Path
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
    ("code", "message", "kind"),
    [
        (
            "content_policy_violation",
            "Your request was blocked by safety filters",
            ErrorKind.CONTENT_POLICY,
        ),
        ("invalid_parameters", "duration must be 5 or 10", ErrorKind.INVALID_INPUT),
        ("insufficient_quota", "Not enough credits", ErrorKind.OUT_OF_FUNDS),
        ("quota_exceeded", "Request rate or quota exceeded", ErrorKind.RATE_LIMITED),
        ("rate_limited", "Too many requests", ErrorKind.RATE_LIMITED),
        ("service_error", "Internal service error", ErrorKind.TRANSIENT),
        ("upstream_error", "Upstream returned 502", ErrorKind.TRANSIENT),
        ("generation_timeout", "The task timed out", ErrorKind.TRANSIENT),
        ("resource_exhausted", "Upstream resources temporarily exhausted", ErrorKind.TRANSIENT),
        ("service_unavailable", "Try later", ErrorKind.TRANSIENT),
        ("channel_account_suspended", "channel problem", ErrorKind.TRANSIENT),
        ("resource_not_found", "task expired", ErrorKind.NOT_FOUND),
        ("generation_failed_no_content", "The model produced no content", ErrorKind.UNKNOWN),
        ("generation_failed_no_content", "Output blocked: NSFW detected", ErrorKind.CONTENT_POLICY),
        ("unknown_error", "Something broke", ErrorKind.UNKNOWN),
    ],
)
async def test_task_failures_are_classified(
    double: AIHubMaxDouble, http: ProviderHttp, code: str, message: str, kind: ErrorKind
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = double.jobs[sub.job.id]
    job.script, job.error_code, job.error = ["failed"], code, message
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.vendor_status == "failed"
    assert status.error is not None
    assert status.error.kind is kind and status.error.vendor_code == code
    assert status.error.detail == message and status.error.provider == "aihubmax"


async def test_cancelled_request_is_a_cancelled_job(
    double: AIHubMaxDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = double.jobs[sub.job.id]
    job.script, job.error_code, job.error = ["failed"], "request_cancelled", "Request cancelled"
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.CANCELLED and status.vendor_status == "failed"
    assert status.error is not None and status.error.vendor_code == "request_cancelled"


def test_failure_without_details() -> None:
    status = parser().parse_status({"id": "t1", "status": "failed"})
    assert status.state is ProviderState.FAILED and status.error is not None
    assert status.error.kind is ErrorKind.UNKNOWN and status.error.detail == "the task failed"
    assert status.error.vendor_code is None


async def test_cancel_is_not_supported(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    before = len(double.requests)
    assert await provider.cancel(sub.job) is False
    assert len(double.requests) == before
    assert provider.capabilities.cancel is False


# -- HTTP errors on create and poll ----------------------------------------------------------


def evo_error(status: int, message: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "type": kind, **extra}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retry", "code"),
    [
        (
            400,
            evo_error(400, "Invalid duration", "invalid_request_error"),
            {},
            ErrorKind.INVALID_INPUT,
            None,
            "invalid_request_error",
        ),
        (
            400,
            {
                "error": {
                    "code": "content_policy_violation",
                    "message": "Your request was blocked",
                    "type": "invalid_request_error",
                }
            },
            {},
            ErrorKind.CONTENT_POLICY,
            None,
            "content_policy_violation",
        ),
        (
            401,
            evo_error(401, "Invalid API key", "authentication_error"),
            {},
            ErrorKind.AUTH,
            None,
            "authentication_error",
        ),
        (
            402,
            evo_error(402, "Insufficient quota", "insufficient_quota_error"),
            {},
            ErrorKind.OUT_OF_FUNDS,
            None,
            "insufficient_quota_error",
        ),
        (
            403,
            evo_error(403, "Model access denied", "model_access_denied"),
            {},
            ErrorKind.AUTH,
            None,
            "model_access_denied",
        ),
        (
            422,
            evo_error(422, "resolution must be 720p, 1080p or 4k", "validation_error"),
            {},
            ErrorKind.INVALID_INPUT,
            None,
            "validation_error",
        ),
        (
            429,
            evo_error(
                429,
                "Rate limit exceeded",
                "rate_limit_error",
                fallback_suggestion="retry after 60 seconds",
            ),
            {},
            ErrorKind.RATE_LIMITED,
            60,
            "rate_limit_error",
        ),
        (
            429,
            evo_error(429, "Rate limit exceeded, retry after 60 seconds", "rate_limit_error"),
            {"Retry-After": "17"},
            ErrorKind.RATE_LIMITED,
            17,
            "rate_limit_error",
        ),
        (
            429,
            {"error": {"code": "insufficient_quota", "message": "You exceeded your quota"}},
            {},
            ErrorKind.OUT_OF_FUNDS,
            None,
            "insufficient_quota",
        ),
        (
            500,
            evo_error(500, "upstream failure", "upstream_error"),
            {},
            ErrorKind.TRANSIENT,
            None,
            "upstream_error",
        ),
        (503, "<html>Service Unavailable</html>", {}, ErrorKind.TRANSIENT, None, None),
    ],
)
async def test_create_errors_are_classified(
    double: AIHubMaxDouble,
    http: ProviderHttp,
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: ErrorKind,
    retry: float | None,
    code: str | None,
) -> None:
    double.next_create("status", status, body, headers)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.kind is kind and info.value.status_code == status
    assert info.value.retry_after_s == retry and info.value.vendor_code == code
    assert not info.value.outcome_unknown
    assert double.creates == 1


async def test_real_out_of_quota_and_bad_key(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    double.quota = 1000
    with pytest.raises(ProviderError) as funds:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert funds.value.kind is ErrorKind.OUT_OF_FUNDS and funds.value.status_code == 402
    with pytest.raises(ProviderError) as auth:
        await adapter(double, http, key="sk-wrong").submit(PLAIN, webhook_url=None)
    assert auth.value.kind is ErrorKind.AUTH and auth.value.status_code == 401
    assert double.jobs == {}


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"id": "task-unified-17571',
        b"",
        b"[1, 2]",
        b'"text"',
        b'{"status": "pending"}',
    ],
)
async def test_malformed_and_truncated_create_replies(
    double: AIHubMaxDouble, http: ProviderHttp, body: bytes
) -> None:
    double.next_create("status", 200, body)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.status_code == 200
    assert info.value.outcome_unknown, "a 2xx create may have made a task: never resend blindly"
    assert double.creates == 1


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (200, b"{not json", {}, ErrorKind.UNKNOWN),
        (200, b'{"id": "t", "status": "complet', {}, ErrorKind.UNKNOWN),
        (200, b"null", {}, ErrorKind.UNKNOWN),
        (200, {"id": "t", "status": "exploded"}, {}, ErrorKind.UNKNOWN),
        (
            429,
            evo_error(
                429,
                "Rate limit exceeded",
                "rate_limit_error",
                fallback_suggestion="retry after 60 seconds",
            ),
            {},
            ErrorKind.RATE_LIMITED,
        ),
        (502, "<html>Bad Gateway</html>", {}, ErrorKind.TRANSIENT),
    ],
)
async def test_poll_errors_are_classified(
    double: AIHubMaxDouble,
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
        assert info.value.retry_after_s == 60
    assert (await provider.poll(sub.job)).state is ProviderState.QUEUED


async def test_poll_unknown_task_and_bad_key(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).poll(ProviderJob("task-unified-0-missing"))
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.status_code == 404
    with pytest.raises(ProviderError) as auth:
        await adapter(double, http, key="sk-wrong").poll(ProviderJob(FIRST_ID))
    assert auth.value.kind is ErrorKind.AUTH


# -- a create is never sent twice --------------------------------------------------------------


async def test_reset_after_send_is_not_retried(double: AIHubMaxDouble, http: ProviderHttp) -> None:
    double.next_create("reset")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_timeout_after_send_is_not_retried(
    double: AIHubMaxDouble, http: ProviderHttp
) -> None:
    double.next_create("hang")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_connection_refused_is_retried_once_listening(http: ProviderHttp) -> None:
    port = free_port()
    double = AIHubMaxDouble()
    provider = AIHubMaxProvider(
        AIHubMaxSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{port}"), http
    )

    async def start_late() -> None:
        await asyncio.sleep(0.1)
        await double.start(port)

    starter = asyncio.create_task(start_late())
    try:
        sub = await provider.submit(PLAIN, webhook_url=None)
        assert sub.job.id == FIRST_ID and double.creates == 1
    finally:
        await starter
        await double.stop()


async def test_connection_refused_forever_is_transient_not_unknown(http: ProviderHttp) -> None:
    provider = AIHubMaxProvider(
        AIHubMaxSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{free_port()}"),
        http,
    )
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown


# -- callbacks (unsigned: the per-job URL token authenticates them) ---------------------------


async def test_real_callback_is_accepted(
    double: AIHubMaxDouble, http: ProviderHttp, receiver: Any
) -> None:
    url, received = receiver
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=HOOK)
    job = double.jobs[sub.job.id]
    assert job.webhook_url == HOOK
    assert await double.send_webhook(job, url) == 200
    [(headers, body)] = received
    event = provider.parse_webhook(headers, body)
    assert event.provider_job_id == sub.job.id and event.delivery_id is None
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    assert event.status.video_url == double.file_url(sub.job.id)


async def test_failure_callback(double: AIHubMaxDouble, http: ProviderHttp, receiver: Any) -> None:
    url, received = receiver
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=HOOK)
    job = double.jobs[sub.job.id]
    job.error_code, job.error = "content_policy_violation", "Content policy violation."
    await double.send_webhook(job, url, success=False)
    event = provider.parse_webhook(*received[0])
    assert event.provider_job_id == sub.job.id
    assert event.status is not None and event.status.state is ProviderState.FAILED
    assert event.status.error is not None and event.status.error.kind is ErrorKind.CONTENT_POLICY


def test_callback_in_a_data_envelope_and_with_task_id() -> None:
    body = {"data": {"task_id": "task-unified-1-abc", "status": "processing", "progress": 12}}
    event = parser().parse_webhook({}, json.dumps(body).encode())
    assert event.provider_job_id == "task-unified-1-abc"
    assert event.status is not None and event.status.state is ProviderState.RUNNING
    assert event.status.progress_pct == 12


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b"null",
        b'{"id": "task-unified-1-abc", "status": "comp',
        b'{"status": "completed", "results": ["https://x/v.mp4"]}',
        b'{"id": "task-unified-1-abc"}',
        b'{"id": "task-unified-1-abc", "status": "teleported"}',
        b'{"id": ["task"], "status": "completed"}',
        b"\xff\xfe\x00garbage",
    ],
)
def test_garbage_callbacks_are_refused(body: bytes) -> None:
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

task_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(
            ["pending", "processing", "completed", "failed", "cancelled", "x"]
        )
        | json_values
    },
    optional={
        "id": st.text(max_size=10) | json_values,
        "results": json_values,
        "result_data": json_values,
        "error": json_values | st.fixed_dictionaries({"code": json_values, "message": json_values}),
        "progress": json_values,
        "task_info": json_values | st.fixed_dictionaries({"estimated_time": json_values}),
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=task_like | st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_status_parser_only_raises_provider_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(ProviderError):
        status = parser().parse_status(data)
        assert status.state is not ProviderState.SUCCEEDED or status.video_url
        assert status.progress_pct is None or 0 <= status.progress_pct <= 100


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=200)
    | task_like.map(lambda v: json.dumps(v).encode())
    | task_like.map(lambda v: json.dumps({"data": v}).encode()),
)
def test_callback_parser_only_raises_webhook_error(body: bytes) -> None:
    with contextlib.suppress(WebhookRefused):
        event = parser().parse_webhook({}, body)
        assert event.provider_job_id

"""fal.ai adapter against its loopback double: wire format, statuses, errors, signed webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers import _json
from bot.providers.base import ProviderJob, ProviderState
from bot.providers.capabilities import CAPABILITIES
from bot.providers.download import DownloadPolicy, download
from bot.providers.errors import (
    ErrorKind,
    ProviderError,
    WebhookAuthError,
    WebhookParseError,
    WebhookRefused,
)
from bot.providers.fal import FalProvider
from bot.providers.http import ProviderHttp
from bot.providers.signing import FalKeys
from bot.settings import FalSettings
from tests.provider_doubles.fal import (
    API_KEY,
    CONTENT_CHECKER,
    FalDouble,
    FalJob,
    public_jwk,
)
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
NOW = 1_800_000_000
FIRST_ID = "00000000-0000-4000-8000-000000000001"
MODEL_PATH = "/fal-ai/kling-video/v3/pro/text-to-video"


@pytest.fixture
async def double() -> AsyncIterator[FalDouble]:
    async with FalDouble() as d:
        yield d


def adapter(
    double: FalDouble, http: ProviderHttp, *, key: str = API_KEY, now: float | None = None
) -> FalProvider:
    fal_settings = FalSettings(
        api_key=SecretStr(key), base_url=double.base_url, jwks_url=double.jwks_url
    )
    if now is None:
        return FalProvider(fal_settings, http)
    return FalProvider(fal_settings, http, now_s=lambda: now)


def job_of(double: FalDouble, job_id: str) -> FalJob:
    job = double.jobs[job_id]
    assert isinstance(job, FalJob)
    return job


def app_urls(double: FalDouble, job_id: str) -> dict[str, str]:
    base = f"{double.base_url}/fal-ai/kling-video/requests/{job_id}"
    return {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}


# -- the request on the wire ------------------------------------------------------------------


async def test_plain_request_on_the_wire(double: FalDouble, http: ProviderHttp) -> None:
    sub = await adapter(double, http).submit(
        PLAIN, webhook_url="https://bot.example/webhooks/fal?t=1"
    )
    [create] = double.creates_of("/text-to-video")
    assert create.path == MODEL_PATH
    assert create.query == {"fal_webhook": "https://bot.example/webhooks/fal?t=1"}
    assert create.header("Authorization") == f"Key {API_KEY}"
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "prompt": "A red fox running through snow",
        "duration": "5",
        "aspect_ratio": "16:9",
        "generate_audio": True,
    }
    assert sub.job.id == FIRST_ID
    assert dict(sub.job.data) == app_urls(double, FIRST_ID)
    assert sub.status.state is ProviderState.QUEUED and sub.status.queue_position == 1
    assert job_of(double, FIRST_ID).webhook_url == "https://bot.example/webhooks/fal?t=1"


async def test_all_options_on_the_wire(double: FalDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(PLAIN_FULL, webhook_url=None)
    [create] = double.creates_of("/text-to-video")
    assert create.query == {}
    assert create.json == {
        "prompt": "A lighthouse at dusk, waves crashing",
        "negative_prompt": "blurry, watermark",
        "duration": "10",
        "aspect_ratio": "9:16",
        "generate_audio": False,
        "cfg_scale": 0.7,
        "shot_type": "customize",
    }


async def test_multishot_request_on_the_wire(double: FalDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(MULTI, webhook_url=None)
    assert double.creates_of("/text-to-video")[0].json == {
        "multi_prompt": [
            {"prompt": "A fox wakes up in its den", "duration": "3"},
            {"prompt": "The fox runs across a snowy field", "duration": "5"},
        ],
        "duration": "8",
        "aspect_ratio": "1:1",
        "generate_audio": True,
    }


async def test_voice_request_on_the_wire(double: FalDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(VOICE, webhook_url=None)
    assert double.creates_of("/text-to-video")[0].json == {
        "prompt": "<<<voice_1>>> says hello to <<<voice_2>>> on a park bench",
        "duration": "5",
        "aspect_ratio": "16:9",
        "generate_audio": True,
        "voice_ids": ["voice_123456", "voice_abcdef"],
    }


def test_fal_capabilities_accept_every_sample_request() -> None:
    for request in (PLAIN, PLAIN_FULL, MULTI, VOICE):
        assert CAPABILITIES["fal"].problems(request) == []


@pytest.mark.parametrize(
    ("resolution", "tier"),
    [("720p", "standard"), ("1080p", "pro"), ("4k", "4k"), (None, "pro")],
)
async def test_resolution_picks_the_endpoint(
    double: FalDouble, http: ProviderHttp, resolution: Any, tier: str
) -> None:
    request = PLAIN.model_copy(update={"resolution": resolution, "audio": None})
    sub = await adapter(double, http).submit(request, webhook_url=None)
    [create] = double.creates_of("/text-to-video")
    assert create.path == f"/fal-ai/kling-video/v3/{tier}/text-to-video"
    assert "resolution" not in create.json
    assert create.json["generate_audio"] is True  # fal's default when the request leaves it open
    assert job_of(double, sub.job.id).tier == tier


async def test_the_double_is_strict_about_the_schema(double: FalDouble) -> None:
    """What the adapter must get right: the double refuses each of these with fal's 422."""
    url = f"{double.base_url}{MODEL_PATH}"
    good = {"prompt": "a cat", "duration": "5"}
    bad: list[dict[str, Any]] = [
        {"prompt": "a cat", "duration": 5},
        {"prompt": "a cat", "resolution": "1080p"},
        {"prompt": "a cat", "multi_prompt": [{"prompt": "x", "duration": "3"}]},
        {"multi_prompt": [{"prompt": "x", "duration": 3}]},
        {"prompt": "a cat", "shot_type": "intelligence"},
        {"prompt": "a cat", "generate_audio": "true"},
        {"prompt": "a cat", "voice_ids": ["a", "b", "c"]},
    ]
    async with aiohttp.ClientSession() as session:
        auth = {"Authorization": f"Key {API_KEY}"}
        async with session.post(url, json=good, headers=auth) as response:
            assert response.status == 200
        for body in bad:
            async with session.post(url, json=body, headers=auth) as response:
                assert response.status == 422, body
                assert (await response.json())["detail"][0]["loc"][0] == "body"
        async with session.post(url, json=good, headers={"Authorization": "Bearer x"}) as response:
            assert response.status == 401
        path = f"{double.base_url}{MODEL_PATH}/requests/{FIRST_ID}/status"
        async with session.get(path, headers=auth) as response:
            assert response.status == 405  # the documented gotcha: status is on the app path


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "state"),
    [
        ({"status": "IN_QUEUE", "queue_position": 3}, ProviderState.QUEUED),
        ({"status": "IN_PROGRESS", "logs": [{"message": "x"}]}, ProviderState.RUNNING),
        ({"status": "COMPLETED", "logs": None}, ProviderState.RUNNING),  # result not fetched yet
        ({"status": "FAILED", "error": "runner crashed"}, ProviderState.FAILED),
        ({"status": "CANCELED"}, ProviderState.CANCELLED),
        ({"status": "CANCELLED"}, ProviderState.CANCELLED),
    ],
)
def test_every_status_word(data: dict[str, Any], state: ProviderState) -> None:
    status = FalProvider(FalSettings(), NO_HTTP).parse_status(data)
    assert status.state is state and status.vendor_status == data["status"]
    assert status.queue_position == (3 if data["status"] == "IN_QUEUE" else None)
    assert (status.error is not None) == (state is ProviderState.FAILED)


def test_unknown_status_word_is_an_error() -> None:
    with pytest.raises(ProviderError) as info:
        FalProvider(FalSettings(), NO_HTTP).parse_status({"status": "DONE"})
    assert info.value.kind is ErrorKind.UNKNOWN


async def test_poll_through_to_success_and_download(
    double: FalDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    seen = [await provider.poll(sub.job) for _ in range(4)]
    assert [s.state for s in seen] == [
        ProviderState.QUEUED,
        ProviderState.QUEUED,
        ProviderState.RUNNING,
        ProviderState.SUCCEEDED,
    ]
    assert [s.queue_position for s in seen] == [1, 0, None, None]
    assert seen[3].video_url == double.file_url(sub.job.id)
    gets = [r.path for r in double.requests if r.method == "GET"]
    app = f"/fal-ai/kling-video/requests/{sub.job.id}"
    assert gets == [f"{app}/status"] * 4 + [app]
    assert all(r.header("Authorization") == f"Key {API_KEY}" for r in double.requests)
    url = seen[3].video_url
    assert url is not None
    size = await download(
        http.session,
        url,
        tmp_path / "v.mp4",
        max_bytes=10**7,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url]),
    )
    assert (tmp_path / "v.mp4").read_bytes() == double.video_bytes
    assert size == len(double.video_bytes)


async def test_job_urls_are_rebuilt_and_foreign_ones_ignored(
    double: FalDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job_of(double, sub.job.id).script = ["succeeded"]
    foreign = {
        "status_url": "http://127.0.0.1:1/steal/status",
        "response_url": "https://evil.example/steal",
    }
    for job in (ProviderJob(sub.job.id), ProviderJob(sub.job.id, foreign)):
        status = await provider.poll(job)
        assert status.state is ProviderState.SUCCEEDED
    app = f"/fal-ai/kling-video/requests/{sub.job.id}"
    assert [r.path for r in double.requests if r.method == "GET"] == [f"{app}/status", app] * 2


async def test_expired_result_url(double: FalDouble, http: ProviderHttp, tmp_path: Path) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job_of(double, sub.job.id).script = ["succeeded"]
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
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("status", "error_type", "message", "retryable", "kind"),
    [
        (422, "content_policy_violation", CONTENT_CHECKER, None, ErrorKind.CONTENT_POLICY),
        (
            422,
            "value_error",
            "Prompt was flagged by a content checker",
            None,
            ErrorKind.CONTENT_POLICY,
        ),
        (422, "no_media_generated", "The model produced no video", None, ErrorKind.INVALID_INPUT),
        (504, "request_timeout", "Request timed out", None, ErrorKind.TRANSIENT),
        (503, "runner_disconnected", "Runner disconnected", True, ErrorKind.TRANSIENT),
        (500, "internal_server_error", "Model crashed", False, ErrorKind.UNKNOWN),
    ],
)
async def test_job_failures_are_classified(
    double: FalDouble,
    http: ProviderHttp,
    status: int,
    error_type: str,
    message: str,
    retryable: bool | None,
    kind: ErrorKind,
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = job_of(double, sub.job.id)
    job.script, job.error_status, job.error_type, job.error = (
        ["failed"],
        status,
        error_type,
        message,
    )
    job.retryable = retryable
    result = await provider.poll(sub.job)
    assert result.state is ProviderState.FAILED and result.vendor_status == "COMPLETED"
    assert result.error is not None
    assert result.error.kind is kind and result.error.status_code == status
    assert result.error.vendor_code == error_type
    assert message in result.error.detail


async def test_cancel(double: FalDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert await provider.cancel(sub.job) is True
    [put] = [r for r in double.requests if r.method == "PUT"]
    assert put.path == f"/fal-ai/kling-video/requests/{sub.job.id}/cancel"
    assert put.header("Authorization") == f"Key {API_KEY}"
    assert (await provider.poll(sub.job)).state is ProviderState.CANCELLED
    assert await provider.cancel(sub.job) is False  # ALREADY_COMPLETED


@pytest.mark.parametrize(
    ("status", "body", "state"),
    [
        (400, {"detail": "Request is still in progress"}, ProviderState.RUNNING),
        (400, {"detail": "Request was cancelled by the user"}, ProviderState.CANCELLED),
        (
            500,
            {"detail": "Request failed", "error_type": "runner_disconnected"},
            ProviderState.FAILED,
        ),
    ],
)
def test_result_replies(status: int, body: Any, state: ProviderState) -> None:
    result = FalProvider(FalSettings(), NO_HTTP).parse_result(status, {}, json.dumps(body).encode())
    assert result.state is state


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b'{"video": {"url": "https://x/v.mp', ErrorKind.UNKNOWN),
        (502, b"<html>Bad Gateway</html>", ErrorKind.TRANSIENT),
        (401, b'{"detail": "No user found for Key ID and Secret"}', ErrorKind.AUTH),
        (429, b'{"detail": "Too many requests"}', ErrorKind.RATE_LIMITED),
        (404, b'{"detail": "Request not found"}', ErrorKind.NOT_FOUND),
    ],
)
def test_unreadable_results_are_poll_errors(status: int, body: bytes, kind: ErrorKind) -> None:
    with pytest.raises(ProviderError) as info:
        FalProvider(FalSettings(), NO_HTTP).parse_result(status, {}, body)
    assert info.value.kind is kind


def test_result_without_video_is_a_failure() -> None:
    result = FalProvider(FalSettings(), NO_HTTP).parse_result(200, {}, b'{"seed": 42}')
    assert result.state is ProviderState.FAILED
    assert result.error is not None and result.error.kind is ErrorKind.UNKNOWN


# -- HTTP errors on submit and poll -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (401, {"detail": "No user found for Key ID and Secret"}, {}, ErrorKind.AUTH),
        (403, {"detail": "Forbidden: key lacks permission"}, {}, ErrorKind.AUTH),
        (
            403,
            {"detail": "User is locked. Reason: Exhausted balance. Top up your balance."},
            {},
            ErrorKind.OUT_OF_FUNDS,
        ),
        (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "prompt"],
                        "msg": CONTENT_CHECKER,
                        "type": "content_policy_violation",
                    }
                ]
            },
            {"X-Fal-Retryable": "false"},
            ErrorKind.CONTENT_POLICY,
        ),
        (
            422,
            {"detail": [{"loc": ["body", "duration"], "msg": "bad", "type": "enum"}]},
            {},
            ErrorKind.INVALID_INPUT,
        ),
        (
            429,
            {"detail": "Concurrency limit reached"},
            {"Retry-After": "17"},
            ErrorKind.RATE_LIMITED,
        ),
        (500, {"detail": "Internal error"}, {}, ErrorKind.TRANSIENT),
        (500, {"detail": "Internal error"}, {"X-Fal-Retryable": "false"}, ErrorKind.UNKNOWN),
        (503, "<html>Service Unavailable</html>", {}, ErrorKind.TRANSIENT),
        (
            418,
            {"detail": "Runner went away", "error_type": "runner_disconnected"},
            {"X-Fal-Error-Type": "runner_disconnected"},
            ErrorKind.TRANSIENT,
        ),
    ],
)
async def test_submit_errors_are_classified(
    double: FalDouble,
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
    if kind is ErrorKind.RATE_LIMITED:
        assert info.value.retry_after_s == 17
    if status == 422 and kind is ErrorKind.CONTENT_POLICY:
        assert info.value.vendor_code == "content_policy_violation"
    assert double.creates == 1


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"request_id": "00000000-0000-4', b"", b"[1, 2]", b'"text"']
)
async def test_malformed_and_truncated_submit_replies(
    double: FalDouble, http: ProviderHttp, body: bytes
) -> None:
    double.next_create("status", 200, body)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    # a 200 means the job was probably queued: the outcome is unknown, not a failure
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown


async def test_submit_without_request_id_is_an_unknown_outcome(
    double: FalDouble, http: ProviderHttp
) -> None:
    double.next_create("status", 200, {"status": "IN_QUEUE"})
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown


async def test_poll_errors(double: FalDouble, http: ProviderHttp) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).poll(ProviderJob("no-such-request"))
    assert info.value.kind is ErrorKind.NOT_FOUND
    sub = await adapter(double, http).submit(PLAIN, webhook_url=None)
    with pytest.raises(ProviderError) as auth:
        await adapter(double, http, key="wrong:key").poll(sub.job)
    assert auth.value.kind is ErrorKind.AUTH


# -- a create is never sent twice --------------------------------------------------------------


async def test_reset_after_send_is_not_retried(double: FalDouble, http: ProviderHttp) -> None:
    double.next_create("reset")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_timeout_after_send_is_not_retried(double: FalDouble, http: ProviderHttp) -> None:
    double.next_create("hang")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_connection_refused_is_retried_once_listening(http: ProviderHttp) -> None:
    port = free_port()
    double = FalDouble()
    provider = FalProvider(
        FalSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{port}"), http
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
    provider = FalProvider(
        FalSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{free_port()}"), http
    )
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown


# -- webhooks --------------------------------------------------------------------------------


async def test_prepare_webhooks_fetches_the_jwks_without_the_api_key(
    double: FalDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http)
    await provider.prepare_webhooks()
    [fetch] = [r for r in double.requests if r.path == "/.well-known/jwks.json"]
    assert fetch.method == "GET" and fetch.header("Authorization") is None
    assert len(provider.keys.keys) == 1


async def test_real_signed_webhooks_are_accepted(
    double: FalDouble, http: ProviderHttp, receiver: Any
) -> None:
    url, received = receiver
    provider = adapter(double, http)
    await provider.prepare_webhooks()
    sub = await provider.submit(PLAIN, webhook_url=url)
    job = job_of(double, sub.job.id)
    assert job.webhook_url == url
    assert await double.send_webhook(job) == 200
    event = provider.parse_webhook(*received[0])
    assert event.provider_job_id == sub.job.id and event.delivery_id is None
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    assert event.status.video_url == double.file_url(sub.job.id)

    job.error_status, job.error_type, job.error = 422, "content_policy_violation", CONTENT_CHECKER
    await double.send_webhook(job, success=False)
    failed = provider.parse_webhook(*received[1])
    assert failed.status is not None and failed.status.state is ProviderState.FAILED
    assert failed.status.error is not None
    assert failed.status.error.kind is ErrorKind.CONTENT_POLICY
    assert failed.status.error.status_code == 422

    await double.send_webhook(job, payload=False)
    bare = provider.parse_webhook(*received[2])
    assert bare.provider_job_id == sub.job.id and bare.status is None  # poll for the result
    await provider.close()


def test_error_webhook_with_a_server_error_is_transient() -> None:
    fal_double = FalDouble()
    provider = FalProvider(FalSettings(), NO_HTTP, keys=loaded_keys(fal_double), now_s=lambda: NOW)
    body = json.dumps(
        {
            "request_id": "r1",
            "gateway_request_id": "r1",
            "status": "ERROR",
            "error": "Invalid status code: 504",
            "payload": {"detail": "Request timed out", "error_type": "request_timeout"},
        }
    ).encode()
    event = provider.parse_webhook(fal_double.sign(body, "r1", NOW), body)
    assert event.status is not None and event.status.state is ProviderState.FAILED
    assert event.status.error is not None and event.status.error.kind is ErrorKind.TRANSIENT
    assert event.status.error.vendor_code == "request_timeout"


def loaded_keys(fal_double: FalDouble, **kwargs: Any) -> FalKeys:
    """FalKeys holding the double's published keys, fetched without a network."""

    async def fetch() -> object:
        return {"keys": [public_jwk(k, "k") for k in fal_double.published_keys]}

    keys = FalKeys(fetch, **kwargs)
    asyncio.run(keys.refresh())
    return keys


FORGERIES = [
    "tampered_body",
    "wrong_key",
    "other_request_id",
    "other_user_id",
    "stale",
    "future",
    "no_request_id",
    "no_user_id",
    "no_timestamp",
    "no_signature",
    "not_hex",
    "short_signature",
]


@pytest.mark.parametrize("mutate", FORGERIES)
def test_webhook_forgeries_are_refused(mutate: str) -> None:
    fal_double = FalDouble()
    provider = FalProvider(FalSettings(), NO_HTTP, keys=loaded_keys(fal_double), now_s=lambda: NOW)
    body = json.dumps(
        {"request_id": "r1", "status": "OK", "payload": {"video": {"url": "https://x/v.mp4"}}}
    ).encode()
    headers = fal_double.sign(body, "r1", NOW)
    assert provider.parse_webhook(headers, body).provider_job_id == "r1"
    if mutate == "tampered_body":
        body = body.replace(b"https://x/", b"https://y/")
    elif mutate == "wrong_key":
        headers = fal_double.sign(body, "r1", NOW, key=Ed25519PrivateKey.generate())
    elif mutate == "other_request_id":
        headers["X-Fal-Webhook-Request-Id"] = "r2"
    elif mutate == "other_user_id":
        headers["X-Fal-Webhook-User-Id"] = "someone-else"
    elif mutate == "stale":
        headers = fal_double.sign(body, "r1", NOW - 301)
    elif mutate == "future":
        headers = fal_double.sign(body, "r1", NOW + 301)
    elif mutate.startswith("no_"):
        name = {
            "no_request_id": "Request-Id",
            "no_user_id": "User-Id",
            "no_timestamp": "Timestamp",
            "no_signature": "Signature",
        }[mutate]
        headers.pop(f"X-Fal-Webhook-{name}")
    elif mutate == "not_hex":
        headers["X-Fal-Webhook-Signature"] = "zz" * 64
    else:
        headers["X-Fal-Webhook-Signature"] = headers["X-Fal-Webhook-Signature"][:64]
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(headers, body)
    assert provider.key_refresh is None  # no event loop here: nothing was started


async def test_rotated_key_triggers_one_background_refresh(
    double: FalDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http, now=NOW)
    await provider.prepare_webhooks()
    body = b'{"request_id": "r1", "status": "OK", "payload": {"video": {"url": "https://x/v"}}}'
    double.rotate_key()
    headers = double.sign(body, "r1", NOW)
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(headers, body)
    refresh = provider.key_refresh
    assert refresh is not None
    await refresh
    assert double.jwks_fetches == 2
    # fal's retry of the same delivery now verifies with the new key
    event = provider.parse_webhook(headers, body)
    assert event.status is not None and event.status.video_url == "https://x/v"
    # forgeries right after cannot make the adapter fetch again and again
    forged = double.sign(body, "r1", NOW, key=Ed25519PrivateKey.generate())
    for _ in range(3):
        with pytest.raises(WebhookAuthError):
            provider.parse_webhook(forged, body)
    await asyncio.sleep(0.05)
    assert double.jwks_fetches == 2
    await provider.close()


async def test_webhook_before_prepare_heals_itself(double: FalDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http, now=NOW)
    body = b'{"request_id": "r1", "status": "ERROR", "error": "boom", "payload": null}'
    headers = double.sign(body, "r1", NOW)
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(headers, body)
    assert provider.key_refresh is not None
    await provider.key_refresh
    event = provider.parse_webhook(headers, body)
    assert event.status is not None and event.status.state is ProviderState.FAILED
    await provider.close()


async def test_stale_or_incomplete_deliveries_trigger_no_fetch(
    double: FalDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http, now=NOW)
    body = b'{"request_id": "r1", "status": "OK", "payload": null}'
    stale = double.sign(body, "r1", NOW - 3600)
    incomplete = double.sign(body, "r1", NOW)
    incomplete.pop("X-Fal-Webhook-User-Id")
    for headers in (stale, incomplete):
        with pytest.raises(WebhookAuthError):
            provider.parse_webhook(headers, body)
    assert provider.key_refresh is None and double.jwks_fetches == 0


async def test_keys_older_than_their_ttl_are_refreshed_in_the_background(
    double: FalDouble, http: ProviderHttp
) -> None:
    fal_settings = FalSettings(base_url=double.base_url, jwks_url=double.jwks_url)
    provider = FalProvider(fal_settings, http, now_s=lambda: NOW, keys_ttl_s=0.0)
    await provider.prepare_webhooks()
    body = b'{"request_id": "r1", "status": "OK", "payload": {"video": {"url": "https://x/v"}}}'
    assert provider.parse_webhook(double.sign(body, "r1", NOW), body).provider_job_id == "r1"
    assert provider.key_refresh is not None
    await provider.key_refresh
    assert double.jwks_fetches == 2
    await provider.close()


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ((500, {"detail": "down"}), ErrorKind.TRANSIENT),
        ((200, {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}]}), ErrorKind.UNKNOWN),
        ((200, ["not", "a", "jwks"]), ErrorKind.UNKNOWN),
    ],
)
async def test_prepare_webhooks_failures(
    double: FalDouble, http: ProviderHttp, reply: tuple[int, Any], kind: ErrorKind
) -> None:
    double.jwks_reply = reply
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).prepare_webhooks()
    assert info.value.kind is kind


def test_unknown_webhook_status_and_bad_json_are_parse_errors() -> None:
    fal_double = FalDouble()
    provider = FalProvider(FalSettings(), NO_HTTP, keys=loaded_keys(fal_double), now_s=lambda: NOW)
    for body in (b'{"request_id": "r1", "status": "DONE"}', b"[1]", b"{oops"):
        with pytest.raises(WebhookParseError):
            provider.parse_webhook(fal_double.sign(body, "r1", NOW), body)


# -- parsers never raise anything but the adapter's error type --------------------------------

status_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "x"])
        | json_values
    },
    optional={"queue_position": json_values, "error": json_values, "error_type": json_values},
)
webhook_like = st.fixed_dictionaries(
    {"status": st.sampled_from(["OK", "ERROR", "ok"]) | json_values},
    optional={
        "request_id": json_values,
        "payload": json_values
        | st.fixed_dictionaries({"video": json_values})
        | st.fixed_dictionaries({"detail": json_values}),
        "error": json_values | st.sampled_from(["Invalid status code: 422", "status 503"]),
        "error_type": json_values,
        "payload_error": json_values,
    },
)
result_like = (
    json_values
    | st.fixed_dictionaries({"video": json_values})
    | st.fixed_dictionaries({"detail": json_values}, optional={"error_type": json_values})
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | webhook_like.map(lambda v: json.dumps(v).encode())
)
HYPOTHESIS_DOUBLE = FalDouble()
HYPOTHESIS_KEYS = loaded_keys(HYPOTHESIS_DOUBLE)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values | status_like)
def test_status_parser_only_raises_provider_error(data: Any) -> None:
    if not isinstance(data, dict):
        return
    with contextlib.suppress(ProviderError):
        FalProvider(FalSettings(), NO_HTTP).parse_status(data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.binary(max_size=200) | result_like.map(lambda v: json.dumps(v).encode()),
    headers=st.dictionaries(
        st.sampled_from(["X-Fal-Retryable", "X-Fal-Error-Type", "Retry-After", "x"]),
        st.text(max_size=20),
    ),
)
def test_result_parser_only_raises_provider_error(
    status: int, body: bytes, headers: dict[str, str]
) -> None:
    with contextlib.suppress(ProviderError):
        FalProvider(FalSettings(), NO_HTTP).parse_result(status, headers, body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies,
    headers=st.dictionaries(
        st.sampled_from(
            [
                "X-Fal-Webhook-Request-Id",
                "X-Fal-Webhook-User-Id",
                "X-Fal-Webhook-Timestamp",
                "X-Fal-Webhook-Signature",
                "x",
            ]
        ),
        st.text(max_size=30) | st.just(str(NOW)),
    ),
)
def test_webhook_parser_only_raises_webhook_error(body: bytes, headers: dict[str, str]) -> None:
    provider = FalProvider(FalSettings(), NO_HTTP, keys=HYPOTHESIS_KEYS, now_s=lambda: NOW)
    with contextlib.suppress(WebhookRefused):
        provider.parse_webhook(headers, body)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, request_id=st.text(min_size=1, max_size=20).filter(str.strip))
def test_signed_webhook_parser_only_raises_parse_errors(body: bytes, request_id: str) -> None:
    """Past a valid signature, arbitrary bodies yield an event or a WebhookParseError."""
    provider = FalProvider(FalSettings(), NO_HTTP, keys=HYPOTHESIS_KEYS, now_s=lambda: NOW)
    headers = HYPOTHESIS_DOUBLE.sign(body, request_id.strip(), NOW)
    try:
        event = provider.parse_webhook(headers, body)
    except WebhookParseError:
        return
    data = _json.loads_object(body)
    assert data is not None
    assert event.provider_job_id == (_json.text(data.get("request_id")) or request_id.strip())

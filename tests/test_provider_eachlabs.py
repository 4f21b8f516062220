"""EachLabs adapter against its loopback double: wire format, statuses, errors, webhooks."""

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
from bot.providers.eachlabs import EachLabsProvider
from bot.providers.errors import ErrorKind, ProviderError, WebhookAuthError, WebhookRefused
from bot.providers.http import ProviderHttp
from bot.settings import EachLabsSettings
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble
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
SECRET = "whsec-eachlabs-test"


@pytest.fixture
async def double() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        yield d


def adapter(
    double: EachLabsDouble,
    http: ProviderHttp,
    *,
    secret: str | None = SECRET,
    key: str = API_KEY,
    now: float | None = None,
) -> EachLabsProvider:
    settings = EachLabsSettings(
        api_key=SecretStr(key),
        base_url=double.api_base,
        webhook_secret=SecretStr(secret) if secret else None,
    )
    if now is None:
        return EachLabsProvider(settings, http)
    return EachLabsProvider(settings, http, now_s=lambda: now)


# -- the request on the wire ------------------------------------------------------------------


async def test_plain_request_on_the_wire(double: EachLabsDouble, http: ProviderHttp) -> None:
    sub = await adapter(double, http).submit(
        PLAIN, webhook_url="https://bot.example/webhooks/eachlabs/tok"
    )
    [create] = double.creates_of("/prediction/")
    assert create.header("X-API-Key") == API_KEY
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "model": "kling-v3-pro-text-to-video",
        "input": {
            "prompt": "A red fox running through snow",
            "duration": "5",
            "aspect_ratio": "16:9",
            "generate_audio": True,
        },
        "webhook_url": "https://bot.example/webhooks/eachlabs/tok",
        "webhook_secret": SECRET,
    }
    assert sub.job.id == "pred-000001" and sub.status.state is ProviderState.QUEUED


async def test_all_options_on_the_wire(double: EachLabsDouble, http: ProviderHttp) -> None:
    await adapter(double, http, secret=None).submit(PLAIN_FULL, webhook_url=None)
    body = double.creates_of("/prediction/")[0].json
    assert body == {
        "model": "kling-v3-pro-text-to-video",
        "input": {
            "prompt": "A lighthouse at dusk, waves crashing",
            "negative_prompt": "blurry, watermark",
            "duration": "10",
            "aspect_ratio": "9:16",
            "generate_audio": False,
            "cfg_scale": 0.7,
            "shot_type": "customize",
        },
    }


async def test_multishot_request_on_the_wire(double: EachLabsDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(MULTI, webhook_url=None)
    data = double.creates_of("/prediction/")[0].json["input"]
    assert "prompt" not in data
    assert data["multi_prompt"] == [
        {"prompt": "A fox wakes up in its den", "duration": "3"},
        {"prompt": "The fox runs across a snowy field", "duration": "5"},
    ]
    assert data["duration"] == "8" and data["aspect_ratio"] == "1:1"


async def test_voice_request_on_the_wire(double: EachLabsDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(VOICE, webhook_url=None)
    data = double.creates_of("/prediction/")[0].json["input"]
    assert data["voice_ids"] == ["voice_123456", "voice_abcdef"]
    assert data["generate_audio"] is True
    assert data["prompt"].startswith("<<<voice_1>>>")


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("created", ProviderState.QUEUED),
        ("starting", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("success", ProviderState.SUCCEEDED),
        ("succeeded", ProviderState.SUCCEEDED),
        ("error", ProviderState.FAILED),
        ("failed", ProviderState.FAILED),
        ("cancelled", ProviderState.CANCELLED),
        ("canceled", ProviderState.CANCELLED),
    ],
)
def test_every_status_word(word: str, state: ProviderState) -> None:
    provider = EachLabsProvider(EachLabsSettings(), NO_HTTP)
    status = provider.parse_status({"status": word, "output": "https://cdn.example/v.mp4"})
    assert status.state is state and status.vendor_status == word


async def test_poll_through_to_success_and_download(
    double: EachLabsDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    seen = [(await provider.poll(sub.job)).state for _ in range(4)]
    assert seen == [
        ProviderState.QUEUED,
        ProviderState.QUEUED,
        ProviderState.RUNNING,
        ProviderState.SUCCEEDED,
    ]
    final = await provider.poll(sub.job)
    assert final.video_url == double.file_url(sub.job.id)
    size = await download(
        http.session,
        final.video_url,
        tmp_path / "v.mp4",
        max_bytes=10_000_000,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url]),
    )
    assert (tmp_path / "v.mp4").read_bytes() == double.video_bytes and size == len(
        double.video_bytes
    )


async def test_expired_result_url(
    double: EachLabsDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = adapter(double, http)
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
    assert not list(tmp_path.iterdir()), "no partial file is left behind"


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        ("PROVIDER_FAILED", "generation failed", ErrorKind.UNKNOWN),
        (
            "PROVIDER_REJECTED",
            "Content safety check failed for the prompt",
            ErrorKind.CONTENT_POLICY,
        ),
        ("PROVIDER_REJECTED", "upstream refused", ErrorKind.CONTENT_POLICY),
        ("INPUT_VALIDATION_ERROR", "duration not allowed", ErrorKind.INVALID_INPUT),
        ("EXECUTION_TIMEOUT", "took too long", ErrorKind.TRANSIENT),
        ("PROVIDER_RATE_LIMIT", "slow down", ErrorKind.RATE_LIMITED),
    ],
)
async def test_job_failures_are_classified(
    double: EachLabsDouble, http: ProviderHttp, code: str, message: str, kind: ErrorKind
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = double.jobs[sub.job.id]
    job.script, job.error_code, job.error = ["failed"], code, message
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.error is not None
    assert status.error.kind is kind and status.error.vendor_code == code


async def test_cancel(double: EachLabsDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert await provider.cancel(sub.job) is True
    assert (await provider.poll(sub.job)).state is ProviderState.CANCELLED


# -- HTTP errors on create and poll ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (
            400,
            {"status": "error", "message": "Invalid input", "details": "duration"},
            {},
            ErrorKind.INVALID_INPUT,
        ),
        (
            400,
            {"status": "error", "message": "Prompt flagged by content moderation"},
            {},
            ErrorKind.CONTENT_POLICY,
        ),
        (401, {"error": "Invalid API key"}, {}, ErrorKind.AUTH),
        (402, {"error": "Insufficient balance"}, {}, ErrorKind.OUT_OF_FUNDS),
        (
            403,
            {"status": "error", "message": "Insufficient credits, please top up"},
            {},
            ErrorKind.OUT_OF_FUNDS,
        ),
        (
            429,
            {"status": "error", "message": "Rate limit exceeded"},
            {"Retry-After": "17"},
            ErrorKind.RATE_LIMITED,
        ),
        (500, {"status": "error", "message": "internal"}, {}, ErrorKind.TRANSIENT),
        (503, "<html>Service Unavailable</html>", {}, ErrorKind.TRANSIENT),
    ],
)
async def test_create_errors_are_classified(
    double: EachLabsDouble,
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
    assert double.creates == 1


@pytest.mark.parametrize("body", [b"{not json", b'{"status": "succ', b"", b"[1, 2]", b'"text"'])
async def test_malformed_and_truncated_create_replies(
    double: EachLabsDouble, http: ProviderHttp, body: bytes
) -> None:
    """A 2xx the adapter cannot read may still have created the job: an unknown outcome."""
    double.next_create("status", 200, body)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN
    assert info.value.outcome_unknown


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_timeout_on_create_is_an_unknown_outcome(
    double: EachLabsDouble, http: ProviderHttp, status: int
) -> None:
    double.next_create("status", status, "<html>Bad Gateway</html>")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    assert double.creates == 1


async def test_create_without_id_is_an_unknown_outcome(
    double: EachLabsDouble, http: ProviderHttp
) -> None:
    double.next_create("status", 200, {"status": "success", "message": "ok"})
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown


async def test_poll_errors(double: EachLabsDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http)
    with pytest.raises(ProviderError) as info:
        await provider.poll(ProviderJob("pred-unknown"))
    assert info.value.kind is ErrorKind.NOT_FOUND
    bad_key = adapter(double, http, key="wrong")
    with pytest.raises(ProviderError) as auth:
        await bad_key.poll(ProviderJob("pred-000001"))
    assert auth.value.kind is ErrorKind.AUTH


# -- a create is never sent twice --------------------------------------------------------------


async def test_reset_after_send_is_not_retried(double: EachLabsDouble, http: ProviderHttp) -> None:
    double.next_create("reset")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_timeout_after_send_is_not_retried(
    double: EachLabsDouble, http: ProviderHttp
) -> None:
    double.next_create("hang")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_connection_refused_is_retried_once_listening(http: ProviderHttp) -> None:
    port = free_port()
    double = EachLabsDouble()
    provider = EachLabsProvider(
        EachLabsSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{port}/v1"), http
    )

    async def start_late() -> None:
        await asyncio.sleep(0.1)
        await double.start(port)

    starter = asyncio.create_task(start_late())
    try:
        sub = await provider.submit(PLAIN, webhook_url=None)
        assert sub.job.id == "pred-000001" and double.creates == 1
    finally:
        await starter
        await double.stop()


async def test_connection_refused_forever_is_transient_not_unknown(http: ProviderHttp) -> None:
    provider = EachLabsProvider(
        EachLabsSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{free_port()}/v1"),
        http,
    )
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown


# -- webhooks --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["seed", "docs", "legacy"])
async def test_real_signed_webhook_is_accepted(
    double: EachLabsDouble, http: ProviderHttp, receiver: Any, variant: str
) -> None:
    url, received = receiver
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=url)
    await double.send_webhook(double.jobs[sub.job.id], variant=variant)
    [(headers, body)] = received
    event = provider.parse_webhook(headers, body)
    assert event.provider_job_id == sub.job.id
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    assert event.status.video_url == double.file_url(sub.job.id)


async def test_failure_webhook(double: EachLabsDouble, http: ProviderHttp, receiver: Any) -> None:
    url, received = receiver
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=url)
    job = double.jobs[sub.job.id]
    job.error_code, job.error = "PROVIDER_REJECTED", "content safety: nudity"
    await double.send_webhook(job, success=False, variant="docs")
    event = provider.parse_webhook(*received[0])
    assert event.status is not None and event.status.state is ProviderState.FAILED
    assert event.status.error is not None and event.status.error.kind is ErrorKind.CONTENT_POLICY


def signed(body: bytes, *, secret: str = SECRET, ts: int = 1_800_000_000) -> dict[str, str]:
    return EachLabsDouble.sign(secret, body, ts)


@pytest.mark.parametrize(
    "mutate",
    [
        "tampered_body",
        "wrong_secret",
        "stale",
        "future",
        "no_signature",
        "no_timestamp",
        "garbage_sig",
    ],
)
def test_webhook_forgeries_are_refused(mutate: str) -> None:
    now = 1_800_000_000
    provider = EachLabsProvider(
        EachLabsSettings(webhook_secret=SecretStr(SECRET)),
        NO_HTTP,
        now_s=lambda: now,
    )
    body = json.dumps(
        {"exec_id": "p1", "status": "succeeded", "output": "https://x/v.mp4"}
    ).encode()
    headers = signed(body, ts=now)
    assert provider.parse_webhook(headers, body).provider_job_id == "p1"
    if mutate == "tampered_body":
        body = body.replace(b"p1", b"p2")
    elif mutate == "wrong_secret":
        headers = signed(body, secret="other", ts=now)
    elif mutate == "stale":
        headers = signed(body, ts=now - 301)
    elif mutate == "future":
        headers = signed(body, ts=now + 301)
    elif mutate == "no_signature":
        headers.pop("X-Webhook-Signature")
    elif mutate == "no_timestamp":
        headers.pop("X-Webhook-Timestamp")
    else:
        headers["X-Webhook-Signature"] = "sha256=zz"
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(headers, body)


def test_webhook_without_a_configured_secret_is_verified_with_the_derived_one() -> None:
    now = 1_800_000_000
    provider = EachLabsProvider(
        EachLabsSettings(api_key=SecretStr(API_KEY)), NO_HTTP, now_s=lambda: now
    )
    body = b'{"exec_id": "p9", "status": "failed", "output": "", "error": "boom"}'
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook({}, body)  # unsigned: refused, not trusted to the URL token
    derived = provider._secret
    assert len(derived) == 64 and derived != API_KEY
    event = provider.parse_webhook(signed(body, secret=derived, ts=now), body)
    assert event.provider_job_id == "p9" and event.status is not None
    assert event.status.state is ProviderState.FAILED


# -- parsers never raise anything but the adapter's error type --------------------------------

status_like = st.fixed_dictionaries(
    {"status": st.sampled_from(["success", "error", "processing", "created", "x"]) | json_values},
    optional={
        "output": json_values,
        "id": json_values,
        "exec_id": json_values,
        "error": json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values | status_like)
def test_status_parser_only_raises_provider_error(data: Any) -> None:
    provider = EachLabsProvider(EachLabsSettings(), NO_HTTP)
    if not isinstance(data, dict):
        return
    with contextlib.suppress(ProviderError):
        provider.parse_status(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | status_like.map(lambda v: json.dumps(v).encode()),
    headers=st.dictionaries(
        st.sampled_from(["X-Webhook-Signature", "X-Webhook-Timestamp", "Content-Type", "x"]),
        st.text(max_size=30),
    ),
    secret=st.sampled_from(["", SECRET]),
)
def test_webhook_parser_only_raises_webhook_error(
    body: bytes, headers: dict[str, str], secret: str
) -> None:
    provider = EachLabsProvider(
        EachLabsSettings(webhook_secret=SecretStr(secret) if secret else None),
        NO_HTTP,
    )
    with contextlib.suppress(WebhookRefused):
        provider.parse_webhook(headers, body)

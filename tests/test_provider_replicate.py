"""Replicate adapter against its loopback double: wire format, statuses, errors, webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
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
from bot.providers.http import ProviderHttp
from bot.providers.replicate import ReplicateProvider
from bot.settings import ReplicateSettings
from tests.provider_doubles.replicate import (
    API_TOKEN,
    SENSITIVE,
    ReplicateDouble,
    ReplicateJob,
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
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FIRST_ID = "kv3aaaaaaaaaaaaaaaaaaaaaab"
CREATE_PATH = "/v1/models/kwaivgi/kling-v3-video/predictions"
PLAIN_FULL_SUPPORTED = PLAIN_FULL.model_copy(update={"cfg_scale": None, "shot_type": None})


@pytest.fixture
async def double() -> AsyncIterator[ReplicateDouble]:
    async with ReplicateDouble() as d:
        yield d


def adapter(
    double: ReplicateDouble,
    http: ProviderHttp,
    *,
    secret: str | None = None,
    token: str = API_TOKEN,
    now: float | None = None,
) -> ReplicateProvider:
    replicate_settings = ReplicateSettings(
        api_key=SecretStr(token),
        base_url=double.api_base,
        webhook_secret=SecretStr(secret) if secret else None,
    )
    if now is None:
        return ReplicateProvider(replicate_settings, http)
    return ReplicateProvider(replicate_settings, http, now_s=lambda: now)


def job_of(double: ReplicateDouble, job_id: str) -> ReplicateJob:
    job = double.jobs[job_id]
    assert isinstance(job, ReplicateJob)
    return job


# -- the request on the wire ------------------------------------------------------------------


async def test_plain_request_on_the_wire(double: ReplicateDouble, http: ProviderHttp) -> None:
    sub = await adapter(double, http).submit(PLAIN, webhook_url="https://bot.example/wh/replicate")
    [create] = double.creates_of("/predictions")
    assert create.path == CREATE_PATH
    assert create.header("Authorization") == f"Bearer {API_TOKEN}"
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "input": {
            "prompt": "A red fox running through snow",
            "mode": "pro",
            "duration": 5,
            "aspect_ratio": "16:9",
            "generate_audio": True,
        },
        "webhook": "https://bot.example/wh/replicate",
        "webhook_events_filter": ["completed"],
    }
    assert sub.job == ProviderJob(FIRST_ID)
    assert sub.status.state is ProviderState.QUEUED and sub.status.vendor_status == "starting"


async def test_supported_options_on_the_wire(double: ReplicateDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(PLAIN_FULL_SUPPORTED, webhook_url=None)
    assert double.creates_of("/predictions")[0].json == {
        "input": {
            "prompt": "A lighthouse at dusk, waves crashing",
            "negative_prompt": "blurry, watermark",
            "mode": "pro",
            "duration": 10,
            "aspect_ratio": "9:16",
            "generate_audio": False,
        }
    }


async def test_unsupported_options_are_refused_before_sending(
    double: ReplicateDouble, http: ProviderHttp
) -> None:
    assert CAPABILITIES["replicate"].problems(PLAIN_FULL) == [
        "Replicate does not support cfg_scale.",
        "Replicate does not support choosing a shot type.",
    ]
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN_FULL, webhook_url=None)
    assert info.value.kind is ErrorKind.INVALID_INPUT
    assert "cfg_scale" in info.value.detail
    assert double.creates == 0 and double.requests == []


async def test_voice_ids_are_refused_not_dropped(
    double: ReplicateDouble, http: ProviderHttp
) -> None:
    assert CAPABILITIES["replicate"].problems(VOICE) == ["Replicate does not support voice ids."]
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(VOICE, webhook_url=None)
    assert info.value.kind is ErrorKind.INVALID_INPUT
    assert double.creates == 0 and double.requests == []


async def test_multishot_request_on_the_wire(double: ReplicateDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(MULTI, webhook_url=None)
    data = double.creates_of("/predictions")[0].json["input"]
    assert data == {
        "prompt": "A fox wakes up in its den",
        "multi_prompt": data["multi_prompt"],
        "mode": "pro",
        "duration": 8,
        "aspect_ratio": "1:1",
        "generate_audio": True,
    }
    assert isinstance(data["multi_prompt"], str)  # a JSON string, not an array
    assert json.loads(data["multi_prompt"]) == [
        {"prompt": "A fox wakes up in its den", "duration": 3},
        {"prompt": "The fox runs across a snowy field", "duration": 5},
    ]


@pytest.mark.parametrize(
    ("resolution", "mode"), [("720p", "standard"), ("1080p", "pro"), (None, "pro")]
)
async def test_resolution_is_the_mode(
    double: ReplicateDouble, http: ProviderHttp, resolution: Any, mode: str
) -> None:
    request = PLAIN.model_copy(update={"resolution": resolution, "audio": None})
    await adapter(double, http).submit(request, webhook_url=None)
    data = double.creates_of("/predictions")[0].json["input"]
    assert data["mode"] == mode
    assert data["generate_audio"] is False  # Replicate's default when the request leaves it open


async def test_4k_is_refused(double: ReplicateDouble, http: ProviderHttp) -> None:
    request = PLAIN.model_copy(update={"resolution": "4k"})
    assert CAPABILITIES["replicate"].problems(request) == [
        "Replicate renders 1080p, 720p only (got 4k)."
    ]
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(request, webhook_url=None)
    assert info.value.kind is ErrorKind.INVALID_INPUT and double.creates == 0


async def test_the_double_is_strict_about_the_schema(double: ReplicateDouble) -> None:
    """What the adapter must get right: the double refuses each of these with a 422."""
    url = f"{double.base_url}{CREATE_PATH}"
    good: dict[str, Any] = {"input": {"prompt": "a cat", "duration": 5, "mode": "pro"}}
    bad: list[dict[str, Any]] = [
        {"input": {"prompt": "a cat", "duration": "5"}},
        {"input": {"prompt": "a cat", "cfg_scale": 0.5}},
        {"input": {"prompt": "a cat", "voice_ids": ["v"]}},
        {"input": {"prompt": "a cat", "mode": "1080p"}},
        {"input": {"duration": 5, "multi_prompt": [{"prompt": "x", "duration": 5}]}},
        {"input": {"duration": 5, "multi_prompt": '[{"prompt": "x", "duration": "5"}]'}},
        {"input": {"duration": 8, "multi_prompt": '[{"prompt": "x", "duration": 5}]'}},
        {"input": {"prompt": "a cat"}, "webhook_events_filter": ["done"]},
        {"prompt": "a cat"},
    ]
    async with aiohttp.ClientSession() as session:
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with session.post(url, json=good, headers=auth) as response:
            assert response.status == 201
        for body in bad:
            async with session.post(url, json=body, headers=auth) as response:
                assert response.status == 422, body
                assert (await response.json())["title"] == "Input validation failed"
        async with session.post(url, json=good, headers={"Authorization": "Token x"}) as response:
            assert response.status == 401


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("starting", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("succeeded", ProviderState.SUCCEEDED),
        ("failed", ProviderState.FAILED),
        ("aborted", ProviderState.FAILED),
        ("canceled", ProviderState.CANCELLED),
        ("cancelled", ProviderState.CANCELLED),
    ],
)
def test_every_status_word(word: str, state: ProviderState) -> None:
    provider = ReplicateProvider(ReplicateSettings(), NO_HTTP)
    status = provider.parse_status(
        {"status": word, "output": "https://replicate.delivery/x/v.mp4", "error": None}
    )
    assert status.state is state and status.vendor_status == word
    assert (status.error is not None) == (state is ProviderState.FAILED)


def test_output_may_be_a_list() -> None:
    status = ReplicateProvider(ReplicateSettings(), NO_HTTP).parse_status(
        {"status": "succeeded", "output": ["https://replicate.delivery/x/v.mp4"]}
    )
    assert status.video_url == "https://replicate.delivery/x/v.mp4"


async def test_poll_through_to_success_and_download(
    double: ReplicateDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    seen = [await provider.poll(sub.job) for _ in range(4)]
    assert [s.state for s in seen] == [
        ProviderState.QUEUED,
        ProviderState.RUNNING,
        ProviderState.RUNNING,
        ProviderState.SUCCEEDED,
    ]
    assert [s.progress_pct for s in seen] == [None, 60, 90, 100]  # from the logs' progress bar
    assert [r.path for r in double.requests if r.method == "GET"] == [
        f"/v1/predictions/{sub.job.id}"
    ] * 4
    url = seen[3].video_url
    assert url == double.file_url(sub.job.id)
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


async def test_expired_result_url(
    double: ReplicateDouble, http: ProviderHttp, tmp_path: Path
) -> None:
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


async def test_removed_output_is_result_expired(
    double: ReplicateDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = job_of(double, sub.job.id)
    job.script, job.removed = ["succeeded"], True
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.vendor_status == "succeeded"
    assert status.error is not None and status.error.kind is ErrorKind.RESULT_EXPIRED


@pytest.mark.parametrize(
    ("word", "message", "code", "kind"),
    [
        ("failed", SENSITIVE, "E005", ErrorKind.CONTENT_POLICY),
        ("failed", "Prediction failed: out of memory (E1001)", "E1001", ErrorKind.TRANSIENT),
        ("failed", "E6716: Timeout starting prediction", "E6716", ErrorKind.TRANSIENT),
        ("failed", "E1000: unknown error", "E1000", ErrorKind.UNKNOWN),
        ("failed", "Kling refused: content risk control", None, ErrorKind.CONTENT_POLICY),
        ("failed", "Kling API returned an odd reply", None, ErrorKind.UNKNOWN),
        ("aborted", "", None, ErrorKind.TRANSIENT),
    ],
)
async def test_job_failures_are_classified(
    double: ReplicateDouble,
    http: ProviderHttp,
    word: str,
    message: str,
    code: str | None,
    kind: ErrorKind,
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = job_of(double, sub.job.id)
    job.script, job.error = [word], message
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.vendor_status == word
    assert status.error is not None
    assert status.error.kind is kind and status.error.vendor_code == code


async def test_cancel(double: ReplicateDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert await provider.cancel(sub.job) is True
    [post] = [r for r in double.requests if r.path.endswith("/cancel")]
    assert post.method == "POST" and post.path == f"/v1/predictions/{sub.job.id}/cancel"
    assert post.header("Authorization") == f"Bearer {API_TOKEN}"
    assert (await provider.poll(sub.job)).state is ProviderState.CANCELLED
    done = await provider.submit(PLAIN, webhook_url=None)
    job_of(double, done.job.id).script = ["succeeded"]
    assert await provider.cancel(done.job) is False  # it had already finished
    assert await provider.cancel(ProviderJob("nosuchprediction")) is False


# -- HTTP errors on create and poll ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retry_after"),
    [
        (
            401,
            {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token"},
            {},
            ErrorKind.AUTH,
            None,
        ),
        (
            402,
            {
                "title": "Insufficient credit",
                "detail": "You have insufficient credit to run this model. Go to "
                "https://replicate.com/account/billing#billing to purchase credit.",
                "status": 402,
            },
            {},
            ErrorKind.OUT_OF_FUNDS,
            None,
        ),
        (
            422,
            {"title": "Input validation failed", "detail": "- input.duration: Must be ≤ 15\n"},
            {},
            ErrorKind.INVALID_INPUT,
            None,
        ),
        (
            422,
            {"title": "Input validation failed", "detail": "The prompt was flagged as sensitive"},
            {},
            ErrorKind.CONTENT_POLICY,
            None,
        ),
        (
            429,
            {"detail": "Request was throttled. Your rate limit resets in ~30s.", "status": 429},
            {},
            ErrorKind.RATE_LIMITED,
            30,
        ),
        (
            429,
            {"detail": "Request was throttled.", "status": 429},
            {"Retry-After": "17"},
            ErrorKind.RATE_LIMITED,
            17,
        ),
        (500, {"title": "Internal server error", "status": 500}, {}, ErrorKind.TRANSIENT, None),
        (503, "<html>Service Unavailable</html>", {}, ErrorKind.TRANSIENT, None),
    ],
)
async def test_create_errors_are_classified(
    double: ReplicateDouble,
    http: ProviderHttp,
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: ErrorKind,
    retry_after: float | None,
) -> None:
    double.next_create("status", status, body, headers)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.kind is kind and info.value.status_code == status
    assert info.value.retry_after_s == retry_after
    assert not info.value.outcome_unknown
    assert double.creates == 1


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"id": "kv3aaaa', b"", b"[1, 2]", b'"text"', b'{"status": "starting"}']
)
async def test_malformed_truncated_or_idless_create_replies(
    double: ReplicateDouble, http: ProviderHttp, body: bytes
) -> None:
    double.next_create("status", 201, body)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    # a 201 means the prediction probably exists: the outcome is unknown, not a failure
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown


async def test_poll_errors(double: ReplicateDouble, http: ProviderHttp) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).poll(ProviderJob("nosuchprediction"))
    assert info.value.kind is ErrorKind.NOT_FOUND
    sub = await adapter(double, http).submit(PLAIN, webhook_url=None)
    with pytest.raises(ProviderError) as auth:
        await adapter(double, http, token="r8_wrong").poll(sub.job)
    assert auth.value.kind is ErrorKind.AUTH


# -- a create is never sent twice --------------------------------------------------------------


async def test_reset_after_send_is_not_retried(double: ReplicateDouble, http: ProviderHttp) -> None:
    double.next_create("reset")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_timeout_after_send_is_not_retried(
    double: ReplicateDouble, http: ProviderHttp
) -> None:
    double.next_create("hang")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_connection_refused_is_retried_once_listening(http: ProviderHttp) -> None:
    port = free_port()
    double = ReplicateDouble()
    provider = ReplicateProvider(
        ReplicateSettings(api_key=SecretStr(API_TOKEN), base_url=f"http://127.0.0.1:{port}/v1"),
        http,
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
    provider = ReplicateProvider(
        ReplicateSettings(
            api_key=SecretStr(API_TOKEN), base_url=f"http://127.0.0.1:{free_port()}/v1"
        ),
        http,
    )
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown


# -- webhooks --------------------------------------------------------------------------------


async def test_configured_secret_needs_no_fetch(
    double: ReplicateDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http, secret=SECRET)
    await provider.prepare_webhooks()
    assert double.requests == [] and provider.webhook_secret == SECRET


async def test_real_signed_webhooks_with_the_fetched_secret(
    double: ReplicateDouble, http: ProviderHttp, receiver: Any
) -> None:
    url, received = receiver
    provider = adapter(double, http)
    await provider.prepare_webhooks()
    [fetch] = double.requests
    assert (fetch.method, fetch.path) == ("GET", "/v1/webhooks/default/secret")
    assert fetch.header("Authorization") == f"Bearer {API_TOKEN}"
    assert provider.webhook_secret == double.webhook_secret

    sub = await provider.submit(PLAIN, webhook_url=url)
    job = job_of(double, sub.job.id)
    assert await double.send_webhook(job, msg_id="msg_1") == 200
    event = provider.parse_webhook(*received[0])
    assert event.provider_job_id == sub.job.id and event.delivery_id == "msg_1"
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    assert event.status.video_url == double.file_url(sub.job.id)

    job.error = SENSITIVE
    await double.send_webhook(job, success=False, msg_id="msg_2")
    failed = provider.parse_webhook(*received[1])
    assert failed.delivery_id == "msg_2"
    assert failed.status is not None and failed.status.state is ProviderState.FAILED
    assert failed.status.error is not None
    assert failed.status.error.kind is ErrorKind.CONTENT_POLICY


async def test_webhook_before_the_secret_is_known_heals_itself(
    double: ReplicateDouble, http: ProviderHttp
) -> None:
    provider = adapter(double, http, now=NOW)
    sub = await provider.submit(PLAIN, webhook_url=None)
    body = double.webhook_body(job_of(double, sub.job.id))
    headers = double.sign(double.webhook_secret, body, "msg_1", NOW)
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(headers, body)
    fetch = provider.secret_fetch
    assert fetch is not None
    await fetch
    assert provider.parse_webhook(headers, body).provider_job_id == sub.job.id
    await provider.close()


async def test_prepare_webhooks_failure(double: ReplicateDouble, http: ProviderHttp) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, token="r8_wrong").prepare_webhooks()
    assert info.value.kind is ErrorKind.AUTH


def signed(
    body: bytes, *, secret: str = SECRET, ts: int = NOW, msg: str = "msg_1"
) -> dict[str, str]:
    return ReplicateDouble.sign(secret, body, msg, ts)


@pytest.mark.parametrize(
    "mutate",
    [
        "tampered_body",
        "wrong_secret",
        "other_id",
        "stale",
        "future",
        "no_id",
        "no_timestamp",
        "no_signature",
        "garbage_sig",
        "v2_scheme",
    ],
)
def test_webhook_forgeries_are_refused(mutate: str) -> None:
    provider = ReplicateProvider(
        ReplicateSettings(webhook_secret=SecretStr(SECRET)), NO_HTTP, now_s=lambda: NOW
    )
    body = json.dumps(
        {"id": "p1", "status": "succeeded", "output": "https://replicate.delivery/v.mp4"}
    ).encode()
    headers = signed(body)
    assert provider.parse_webhook(headers, body).provider_job_id == "p1"
    if mutate == "tampered_body":
        body = body.replace(b"p1", b"p2")
    elif mutate == "wrong_secret":
        headers = signed(body, secret="whsec_" + "QUJD" * 8)
    elif mutate == "other_id":
        headers["webhook-id"] = "msg_2"
    elif mutate == "stale":
        headers = signed(body, ts=NOW - 301)
    elif mutate == "future":
        headers = signed(body, ts=NOW + 301)
    elif mutate.startswith("no_"):
        headers.pop(
            {"no_id": "webhook-id", "no_timestamp": "webhook-timestamp"}.get(
                mutate, "webhook-signature"
            )
        )
    elif mutate == "garbage_sig":
        headers["webhook-signature"] = "v1,AAAA"
    else:
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(headers, body)


def test_one_of_several_signatures_is_enough() -> None:
    provider = ReplicateProvider(
        ReplicateSettings(webhook_secret=SecretStr(SECRET)), NO_HTTP, now_s=lambda: NOW
    )
    body = b'{"id": "p1", "status": "failed", "error": "boom"}'
    headers = signed(body)
    headers["webhook-signature"] = "v1,b2xkc2lnbmF0dXJl " + headers["webhook-signature"]
    event = provider.parse_webhook(headers, body)
    assert event.status is not None and event.status.state is ProviderState.FAILED


def test_webhook_without_any_secret_is_refused() -> None:
    provider = ReplicateProvider(ReplicateSettings(), NO_HTTP, now_s=lambda: NOW)
    body = b'{"id": "p1", "status": "succeeded", "output": "https://x/v.mp4"}'
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(signed(body), body)
    assert provider.secret_fetch is None  # no event loop here: nothing was started


def test_signed_garbage_is_a_parse_error() -> None:
    provider = ReplicateProvider(
        ReplicateSettings(webhook_secret=SecretStr(SECRET)), NO_HTTP, now_s=lambda: NOW
    )
    for body in (b"{oops", b"[1]", b'{"id": "p1", "status": "done"}'):
        with pytest.raises(WebhookParseError):
            provider.parse_webhook(signed(body), body)


# -- parsers never raise anything but the adapter's error type --------------------------------

status_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["starting", "processing", "succeeded", "failed", "aborted", "x"])
        | json_values
    },
    optional={
        "id": json_values,
        "output": json_values,
        "error": json_values | st.sampled_from([SENSITIVE, "E1001", "(E99999)"]),
        "logs": json_values | st.sampled_from(["50%|█████", "100%|", "999%|"]),
        "data_removed": json_values,
    },
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | status_like.map(lambda v: json.dumps(v).encode())
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values | status_like)
def test_status_parser_only_raises_provider_error(data: Any) -> None:
    if not isinstance(data, dict):
        return
    with contextlib.suppress(ProviderError):
        ReplicateProvider(ReplicateSettings(), NO_HTTP).parse_status(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies,
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]),
        st.text(max_size=30) | st.just(str(NOW)),
    ),
    secret=st.sampled_from(["", SECRET, "not-base64!"]),
)
def test_webhook_parser_only_raises_webhook_error(
    body: bytes, headers: dict[str, str], secret: str
) -> None:
    provider = ReplicateProvider(
        ReplicateSettings(webhook_secret=SecretStr(secret) if secret else None),
        NO_HTTP,
        now_s=lambda: NOW,
    )
    with contextlib.suppress(WebhookRefused):
        provider.parse_webhook(headers, body)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_signed_webhook_parser_only_raises_parse_errors(body: bytes) -> None:
    """Past a valid signature, arbitrary bodies yield an event or a WebhookParseError."""
    provider = ReplicateProvider(
        ReplicateSettings(webhook_secret=SecretStr(SECRET)), NO_HTTP, now_s=lambda: NOW
    )
    try:
        event = provider.parse_webhook(signed(body, msg="msg_h"), body)
    except WebhookParseError:
        return
    data = _json.loads_object(body)
    assert data is not None and event.delivery_id == "msg_h"
    assert event.provider_job_id == _json.text(data.get("id"))

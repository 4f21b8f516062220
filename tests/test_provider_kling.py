"""Kling's official API adapter against its loopback double: JWT, wire format, statuses, error
codes, callbacks (Standard Webhooks test vector, forged, stale, late)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.pricing import PriceTable
from bot.providers import build_provider
from bot.providers.base import ProviderJob, ProviderState
from bot.providers.capabilities import CAPABILITIES
from bot.providers.errors import (
    ErrorKind,
    ProviderError,
    WebhookAuthError,
    WebhookParseError,
    WebhookRefused,
)
from bot.providers.http import HttpReply, ProviderHttp
from bot.providers.kling import TOKEN_LIFETIME_S, TOKEN_RENEW_S, KlingProvider
from bot.request import VideoRequest
from bot.settings import KlingSettings, Settings
from tests.conftest import Received
from tests.provider_doubles.kling import (
    ACCESS_KEY,
    RISK_CONTROL,
    SECRET_KEY,
    KlingDouble,
    KlingJob,
    make_token,
)
from tests.provider_support import MULTI, NO_HTTP, PLAIN, PLAIN_FULL, VOICE, http, json_values

__all__ = ["http"]
T0 = 1_800_000_000
FIRST_ID = "867283741759111202"
CREATE = "/v1/videos/text2video"
# the official Standard Webhooks test vector (kling_official_and_i2v.md section 1.7)
VECTOR_SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
VECTOR_ID = "9876543210"
VECTOR_TS = 1781080794
VECTOR_BODY = (
    b'{"id":"1234567890","status":"succeeded","message":"","create_time":1781080778802,'
    b'"update_time":1781080794151}'
)
VECTOR_SIGNATURE = "v1,UsKlJP00XoQyOn410NM9xv34sP+Gl0jnOO9Lcpr7NJ4="


class Clock:
    """One manual clock shared by the adapter and the double."""

    def __init__(self, now_s: float = T0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def double(clock: Clock) -> AsyncIterator[KlingDouble]:
    async with KlingDouble() as d:
        d.clock = clock
        yield d


def adapter(
    double: KlingDouble | None,
    http: ProviderHttp,
    clock: Clock,
    *,
    secret_key: str = SECRET_KEY,
    webhook_secret: str | None = None,
) -> KlingProvider:
    kling_settings = KlingSettings(
        access_key=SecretStr(ACCESS_KEY),
        secret_key=SecretStr(secret_key),
        base_url=double.base_url if double is not None else "http://127.0.0.1:9",
        webhook_secret=SecretStr(webhook_secret) if webhook_secret else None,
    )
    return KlingProvider(kling_settings, http, now_s=clock)


def job_of(double: KlingDouble, job_id: str) -> KlingJob:
    job = double.jobs[job_id]
    assert isinstance(job, KlingJob)
    return job


# -- settings and construction ------------------------------------------------------------------


def test_settings_names_and_build_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLINGBOT_PROVIDER", "kling")
    monkeypatch.setenv("KLINGBOT_KLING_ACCESS_KEY", "ak-1")
    monkeypatch.setenv("KLINGBOT_KLING_SECRET_KEY", "sk-1")
    monkeypatch.setenv("KLINGBOT_KLING_WEBHOOK_SECRET", "whsec_AAAA")
    monkeypatch.setenv("KLINGBOT_KLING_PRICE_PER_SECOND", "11")
    loaded = Settings(_env_file=None)
    assert loaded.kling.base_url == "https://api-singapore.klingai.com"
    assert loaded.kling.access_key is not None and loaded.kling.secret_key is not None
    assert loaded.kling.access_key.get_secret_value() == "ak-1"
    assert "sk-1" not in repr(loaded.kling)  # both keys are secrets
    assert loaded.kling.max_concurrent == 5
    assert loaded.missing_provider_keys() == []
    provider = build_provider("kling", loaded, NO_HTTP)
    assert isinstance(provider, KlingProvider)
    assert PriceTable.from_settings(loaded).quote(PLAIN, "kling") == 55


def test_missing_keys_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLINGBOT_PROVIDER", "kling")
    monkeypatch.setenv("KLINGBOT_KLING_ACCESS_KEY", "ak-1")
    loaded = Settings(_env_file=None)
    [problem] = loaded.missing_provider_keys()
    assert problem.startswith("KLINGBOT_KLING_SECRET_KEY is not set")


def test_capability_row() -> None:
    caps = CAPABILITIES["kling"]
    assert caps.resolutions == ("1080p", "720p") and caps.audio_default is False
    assert caps.cfg_scale is False and caps.cancel is False and caps.webhooks == "signed"
    assert caps.image_to_video and caps.end_frame and not caps.image_prompt_required


# -- the JWT ------------------------------------------------------------------------------------


async def test_every_call_carries_a_valid_jwt(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    kling = adapter(double, http, clock)
    sub = await kling.submit(PLAIN, webhook_url=None)
    for _ in range(3):
        await kling.poll(sub.job)
    assert double.refused_tokens == []
    assert len(double.tokens) == len(double.requests) == 4
    for request in double.requests:
        assert (request.header("Authorization") or "").startswith("Bearer ey")
    for head, claims in double.tokens:
        assert head == {"alg": "HS256", "typ": "JWT"}
        assert claims == {"iss": ACCESS_KEY, "exp": T0 + 1800, "nbf": T0 - 5}


async def test_the_token_is_renewed_before_it_expires(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    kling = adapter(double, http, clock)
    sub = await kling.submit(PLAIN, webhook_url=None)
    first = kling.token()
    clock.now_s = T0 + TOKEN_LIFETIME_S - TOKEN_RENEW_S - 1  # still well within its life
    await kling.poll(sub.job)
    assert kling.token() == first
    clock.now_s = T0 + TOKEN_LIFETIME_S - TOKEN_RENEW_S  # five minutes left: a new one
    await kling.poll(sub.job)
    assert kling.token() != first
    assert double.tokens[-1][1] == {
        "iss": ACCESS_KEY,
        "exp": int(clock.now_s) + 1800,
        "nbf": int(clock.now_s) - 5,
    }
    clock.now_s = T0 + 10 * TOKEN_LIFETIME_S  # long after: never sends an expired token
    await kling.poll(sub.job)
    assert double.refused_tokens == []


async def test_the_double_refuses_bad_tokens(double: KlingDouble, http: ProviderHttp) -> None:
    """What the adapter must get right: the double checks signature, issuer, exp and nbf."""
    url = f"{double.base_url}/v1/videos/text2video/1"
    good = {"iss": ACCESS_KEY, "exp": T0 + 1800, "nbf": T0 - 5}
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 1001),
        ({"Authorization": "Bearer  x.y.z"}, 1002),
        ({"Authorization": f"Bearer {make_token(good, 'wrong-secret')}"}, 1002),
        ({"Authorization": f"Bearer {make_token({**good, 'iss': 'other'})}"}, 1002),
        ({"Authorization": f"Bearer {make_token({**good, 'nbf': T0 + 60})}"}, 1003),
        ({"Authorization": f"Bearer {make_token({**good, 'exp': T0})}"}, 1004),
        ({"Authorization": f"Bearer {make_token({'iss': ACCESS_KEY, 'exp': T0 + 9})}"}, 1002),
    ]
    for headers, code in cases:
        reply = await http.call("GET", url, provider="kling", headers=headers)
        assert (reply.status, reply.json_object()["code"]) == (401, code)
    reply = await http.call(
        "GET", url, provider="kling", headers={"Authorization": f"Bearer {make_token(good)}"}
    )
    assert reply.json_object()["code"] == 1203  # the token passed; no such task


async def test_a_wrong_secret_key_is_an_auth_error(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, clock, secret_key="not-the-secret").submit(
            PLAIN, webhook_url=None
        )
    assert info.value.kind is ErrorKind.AUTH and info.value.vendor_code == "1002"
    assert double.jobs == {}


async def test_missing_keys_refuse_without_a_request(http: ProviderHttp, clock: Clock) -> None:
    kling = KlingProvider(KlingSettings(access_key=SecretStr("ak")), http, now_s=clock)
    with pytest.raises(ProviderError) as info:
        await kling.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.AUTH and "SECRET_KEY" in info.value.detail


# -- the create body ----------------------------------------------------------------------------


async def test_plain_request_on_the_wire(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    sub = await adapter(double, http, clock).submit(
        PLAIN, webhook_url="https://bot.example/webhooks/kling/tok"
    )
    [create] = double.creates_of(CREATE)
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "model_name": "kling-v3",
        "mode": "pro",
        "duration": "5",
        "sound": "on",
        "prompt": "A red fox running through snow",
        "aspect_ratio": "16:9",
        "callback_url": "https://bot.example/webhooks/kling/tok",
    }
    assert sub.job == ProviderJob(FIRST_ID, {"kind": "text2video"})
    assert sub.status.state is ProviderState.QUEUED and sub.status.vendor_status == "submitted"


async def test_every_v3_option_on_the_wire(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    kling = adapter(double, http, clock)
    full = PLAIN_FULL.model_copy(update={"cfg_scale": None})
    intelligent = PLAIN.model_copy(update={"shot_type": "intelligent", "resolution": "720p"})
    for request in (full, MULTI, VOICE, intelligent):
        await kling.submit(request, webhook_url=None)
    bodies = [r.json for r in double.creates_of(CREATE)]
    assert bodies[0] == {
        "model_name": "kling-v3",
        "mode": "pro",
        "duration": "10",
        "sound": "off",
        "prompt": "A lighthouse at dusk, waves crashing",
        "negative_prompt": "blurry, watermark",
        "aspect_ratio": "9:16",
    }
    assert bodies[1] == {
        "model_name": "kling-v3",
        "mode": "pro",
        "duration": "8",
        "sound": "on",
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": [
            {"index": 1, "prompt": "A fox wakes up in its den", "duration": "3"},
            {"index": 2, "prompt": "The fox runs across a snowy field", "duration": "5"},
        ],
        "aspect_ratio": "1:1",
    }
    assert bodies[2]["voice_list"] == [{"voice_id": "voice_123456"}, {"voice_id": "voice_abcdef"}]
    assert bodies[2]["sound"] == "on" and "<<<voice_1>>>" in bodies[2]["prompt"]
    assert bodies[3] == {
        "model_name": "kling-v3",
        "mode": "std",
        "duration": "5",
        "sound": "on",
        "prompt": "A red fox running through snow",
        "multi_shot": True,
        "shot_type": "intelligence",
        "aspect_ratio": "16:9",
    }
    assert all("cfg_scale" not in body for body in bodies)


async def test_audio_left_open_is_off(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    await adapter(double, http, clock).submit(
        VideoRequest(prompt="a cat", resolution=None, audio=None), webhook_url=None
    )
    body = double.creates_of(CREATE)[0].json
    assert body["sound"] == "off" and body["mode"] == "pro"


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"cfg_scale": 0.5}, "Kling does not support cfg_scale."),
        ({"resolution": "4k"}, "Kling renders 1080p, 720p only (got 4k)."),
    ],
)
async def test_unsupported_options_are_refused_before_sending(
    double: KlingDouble, http: ProviderHttp, clock: Clock, update: dict[str, Any], message: str
) -> None:
    request = PLAIN.model_copy(update=update)
    assert CAPABILITIES["kling"].problems(request) == [message]
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, clock).submit(request, webhook_url=None)
    assert info.value.kind is ErrorKind.INVALID_INPUT and double.requests == []


async def test_the_double_is_strict_about_the_schema(
    double: KlingDouble, http: ProviderHttp
) -> None:
    headers = {
        "Authorization": f"Bearer {make_token({'iss': ACCESS_KEY, 'exp': T0 + 60, 'nbf': T0})}"
    }
    good: dict[str, Any] = {"model_name": "kling-v3", "prompt": "a cat", "duration": "5"}
    bad: list[dict[str, Any]] = [
        {**good, "duration": 5},
        {**good, "cfg_scale": 0.5},
        {**good, "sound": True},
        {**good, "mode": "1080p"},
        {**good, "voice_list": [{"voice_id": "v"}]},
        {**good, "multi_shot": True, "shot_type": "customize"},
        {
            **good,
            "multi_shot": True,
            "shot_type": "customize",
            "multi_prompt": [{"index": 1, "prompt": "x", "duration": 5}],
        },
        {**good, "image": "abc"},
        {"model_name": "kling-v3", "duration": "5"},
    ]
    url = f"{double.base_url}{CREATE}"
    reply = await http.call("POST", url, provider="kling", headers=headers, json_body=good)
    assert reply.json_object()["code"] == 0
    for body in bad:
        reply = await http.call("POST", url, provider="kling", headers=headers, json_body=body)
        assert (reply.status, reply.json_object()["code"]) == (400, 1201), body


# -- polling ------------------------------------------------------------------------------------


async def test_polling_to_success(double: KlingDouble, http: ProviderHttp, clock: Clock) -> None:
    kling = adapter(double, http, clock)
    sub = await kling.submit(PLAIN, webhook_url=None)
    seen = [await kling.poll(sub.job) for _ in range(3)]
    assert [s.vendor_status for s in seen] == ["submitted", "processing", "succeed"]
    assert [s.state for s in seen] == [
        ProviderState.QUEUED,
        ProviderState.RUNNING,
        ProviderState.SUCCEEDED,
    ]
    assert seen[-1].video_url == double.file_url(sub.job.id)
    assert [r.path for r in double.requests[1:]] == [f"{CREATE}/{FIRST_ID}"] * 3


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (RISK_CONTROL, ErrorKind.CONTENT_POLICY),
        ("Content security risk detected in the output", ErrorKind.CONTENT_POLICY),
        ("internal server timeout", ErrorKind.TRANSIENT),
        ("generation failed", ErrorKind.UNKNOWN),
    ],
)
async def test_polling_to_failure(
    double: KlingDouble, http: ProviderHttp, clock: Clock, message: str, kind: ErrorKind
) -> None:
    kling = adapter(double, http, clock)
    sub = await kling.submit(PLAIN, webhook_url=None)
    job = job_of(double, sub.job.id)
    job.script, job.error = ["running", "failed"], message
    assert (await kling.poll(sub.job)).state is ProviderState.RUNNING
    status = await kling.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.vendor_status == "failed"
    assert status.error is not None and status.error.kind is kind
    assert status.error.detail == message


async def test_succeed_without_a_video_keeps_polling(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    kling = adapter(double, http, clock)
    sub = await kling.submit(PLAIN, webhook_url=None)
    data = {"task_id": sub.job.id, "task_status": "succeed", "task_result": {"videos": []}}
    double.next_poll(200, double.envelope(0, "SUCCEED", data))
    status = await kling.poll(sub.job)
    assert status.state is ProviderState.RUNNING and status.vendor_status == "succeed"


async def test_poll_of_an_unknown_task_is_not_found(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, clock).poll(ProviderJob("42", {"kind": "text2video"}))
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.vendor_code == "1203"


async def test_poll_uses_the_kind_of_the_create(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    kling = adapter(double, http, clock)
    sub = await kling.submit(PLAIN, webhook_url=None)
    with pytest.raises(ProviderError) as info:  # the real API's paths must match the create
        await kling.poll(ProviderJob(sub.job.id, {"kind": "image2video"}))
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert (await kling.poll(ProviderJob(sub.job.id))).state is ProviderState.QUEUED


# -- business error codes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (1000, ErrorKind.AUTH),
        (1001, ErrorKind.AUTH),
        (1002, ErrorKind.AUTH),
        (1003, ErrorKind.AUTH),
        (1004, ErrorKind.AUTH),
        (1100, ErrorKind.AUTH),
        (1101, ErrorKind.OUT_OF_FUNDS),
        (1102, ErrorKind.OUT_OF_FUNDS),
        (1103, ErrorKind.AUTH),
        (1200, ErrorKind.INVALID_INPUT),
        (1201, ErrorKind.INVALID_INPUT),
        (1202, ErrorKind.INVALID_INPUT),
        (1203, ErrorKind.INVALID_INPUT),
        (1300, ErrorKind.CONTENT_POLICY),
        (1301, ErrorKind.CONTENT_POLICY),
        (1302, ErrorKind.RATE_LIMITED),
        (1303, ErrorKind.RATE_LIMITED),
        (1304, ErrorKind.AUTH),
        (5000, ErrorKind.TRANSIENT),
        (5001, ErrorKind.TRANSIENT),
    ],
)
async def test_each_code_maps_to_the_taxonomy(
    double: KlingDouble, http: ProviderHttp, clock: Clock, code: int, kind: ErrorKind
) -> None:
    double.next_error(code, f"message for {code}")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, clock).submit(PLAIN, webhook_url=None)
    error = info.value
    assert error.kind is kind and error.vendor_code == str(code)
    assert f"code {code}" in error.detail and f"message for {code}" in error.detail
    assert error.outcome_unknown is False
    if kind is ErrorKind.RATE_LIMITED:
        assert error.retry_after_s is not None and error.retry_after_s >= 1.0
    assert double.jobs == {}


async def test_out_of_funds_is_eligible_for_failover(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    double.next_error(1102, "resource pack exhausted")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, clock).submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.OUT_OF_FUNDS and not info.value.retryable
    assert info.value.status_code == 429  # a 429 that is not rate limiting


async def test_rate_limits_wait_retry_after_or_back_off(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    kling = adapter(double, http, clock)
    double.next_error(1302, "request too fast", headers={"Retry-After": "7"})
    with pytest.raises(ProviderError) as info:
        await kling.submit(PLAIN, webhook_url=None)
    assert info.value.retry_after_s == 7.0
    double.max_parallel = 1
    await kling.submit(PLAIN, webhook_url=None)
    with pytest.raises(ProviderError) as info:  # the double's own concurrency cap
        await kling.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.RATE_LIMITED and info.value.vendor_code == "1303"
    assert info.value.retry_after_s == 1.0 and "parallel task" in info.value.detail


async def test_a_non_zero_code_with_http_200_is_an_error(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    double.next_error(1301, "prompt rejected", status=200)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, clock).submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.CONTENT_POLICY


async def test_a_gateway_timeout_on_create_is_an_unknown_outcome(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    double.next_error(5002, "timeout")  # HTTP 504
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, clock).submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and info.value.outcome_unknown
    assert double.creates == 1


async def test_a_reply_without_task_id_is_an_unknown_outcome(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    double.next_create("status", 200, double.envelope(0, "SUCCEED", {"task_status": "submitted"}))
    with pytest.raises(ProviderError) as info:
        await adapter(double, http, clock).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.UNKNOWN


# -- callbacks ----------------------------------------------------------------------------------


def vector_headers(**changes: str) -> dict[str, str]:
    headers = {
        "Webhook-Id": VECTOR_ID,
        "Webhook-Timestamp": str(VECTOR_TS),
        "Webhook-Signature": VECTOR_SIGNATURE,
    }
    return {**headers, **changes}


def test_the_standard_webhooks_test_vector_is_accepted(http: ProviderHttp) -> None:
    kling = adapter(None, NO_HTTP, Clock(VECTOR_TS + 30), webhook_secret=VECTOR_SECRET)
    event = kling.parse_webhook(vector_headers(), VECTOR_BODY)
    assert event.provider_job_id == "1234567890" and event.delivery_id == VECTOR_ID
    assert event.status is not None  # "succeeded" without outputs: a hint, not a result
    assert event.status.state is ProviderState.RUNNING


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (vector_headers(), VECTOR_BODY.replace(b"succeeded", b"succeedeD")),
        (vector_headers(**{"Webhook-Id": "9876543211"}), VECTOR_BODY),
        (vector_headers(**{"Webhook-Timestamp": str(VECTOR_TS + 1)}), VECTOR_BODY),
        (vector_headers(**{"Webhook-Signature": "v1,AAAA" + VECTOR_SIGNATURE[7:]}), VECTOR_BODY),
        (vector_headers(**{"Webhook-Signature": "v2," + VECTOR_SIGNATURE[3:]}), VECTOR_BODY),
        ({"Content-Type": "application/json"}, VECTOR_BODY),
    ],
)
def test_a_forged_callback_is_refused(headers: dict[str, str], body: bytes) -> None:
    kling = adapter(None, NO_HTTP, Clock(VECTOR_TS), webhook_secret=VECTOR_SECRET)
    with pytest.raises(WebhookAuthError):
        kling.parse_webhook(headers, body)


@pytest.mark.parametrize("offset_s", [301, -301, 86_400])
def test_a_stale_callback_is_refused(offset_s: int) -> None:
    kling = adapter(None, NO_HTTP, Clock(VECTOR_TS + offset_s), webhook_secret=VECTOR_SECRET)
    with pytest.raises(WebhookAuthError) as info:
        kling.parse_webhook(vector_headers(), VECTOR_BODY)
    assert "off" in info.value.detail


def test_rotation_accepts_any_listed_signature() -> None:
    kling = adapter(None, NO_HTTP, Clock(VECTOR_TS), webhook_secret=VECTOR_SECRET)
    headers = vector_headers(**{"Webhook-Signature": f"v1,b2xk {VECTOR_SIGNATURE}"})
    assert kling.parse_webhook(headers, VECTOR_BODY).delivery_id == VECTOR_ID


async def test_signed_callbacks_over_http(
    double: KlingDouble,
    http: ProviderHttp,
    clock: Clock,
    receiver: tuple[str, Received],
) -> None:
    url, received = receiver
    double.webhook_secret = VECTOR_SECRET
    kling = adapter(double, http, clock, webhook_secret=VECTOR_SECRET)
    sub = await kling.submit(PLAIN, webhook_url=url)
    job = job_of(double, sub.job.id)
    assert job.webhook_url == url
    await double.send_callback(job, state="running", msg_id="msg-1")
    await double.send_callback(job, msg_id="msg-2")
    await double.send_callback(job, state="failed", msg_id="msg-3")
    events = [kling.parse_webhook(headers, body) for headers, body in received]
    assert [e.delivery_id for e in events] == ["msg-1", "msg-2", "msg-3"]
    assert all(e.provider_job_id == sub.job.id for e in events)
    assert [e.status.state if e.status else None for e in events] == [
        ProviderState.RUNNING,
        ProviderState.SUCCEEDED,
        ProviderState.FAILED,
    ]
    assert events[1].status is not None and events[1].status.video_url == double.file_url(job.id)


async def test_unsigned_callbacks_rely_on_the_url_token(
    double: KlingDouble,
    http: ProviderHttp,
    clock: Clock,
    receiver: tuple[str, Received],
) -> None:
    url, received = receiver
    kling = adapter(double, http, clock)  # no webhook secret: Kling signs nothing
    sub = await kling.submit(PLAIN, webhook_url=url)
    await double.send_callback(job_of(double, sub.job.id))
    [(headers, body)] = received
    assert "webhook-signature" not in {k.lower() for k in headers}
    event = kling.parse_webhook(headers, body)
    assert event.provider_job_id == sub.job.id and event.delivery_id is None
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    # with a secret configured, the same unsigned delivery is refused
    signed = adapter(double, http, clock, webhook_secret=VECTOR_SECRET)
    with pytest.raises(WebhookAuthError):
        signed.parse_webhook(headers, body)


async def test_a_late_callback_after_the_token_expired(
    double: KlingDouble,
    http: ProviderHttp,
    clock: Clock,
    receiver: tuple[str, Received],
) -> None:
    """The job outlives its JWT: the callback still verifies, and the poll it triggers signs anew."""
    url, received = receiver
    double.webhook_secret = VECTOR_SECRET
    kling = adapter(double, http, clock, webhook_secret=VECTOR_SECRET)
    sub = await kling.submit(PLAIN, webhook_url=url)
    job = job_of(double, sub.job.id)
    job.script = ["succeeded"]
    clock.now_s = T0 + 2 * TOKEN_LIFETIME_S  # the submit's token died an hour ago
    await double.send_callback(job, msg_id="late-1")
    stale_stamp = T0 + 60  # a delivery signed long ago and retried late
    await double.send_callback(job, msg_id="late-2", timestamp=stale_stamp)
    fresh, stale = received
    event = kling.parse_webhook(*fresh)
    assert event.delivery_id == "late-1" and event.status is not None
    assert event.status.state is ProviderState.SUCCEEDED
    with pytest.raises(WebhookAuthError):
        kling.parse_webhook(*stale)
    status = await kling.poll(sub.job)
    assert status.state is ProviderState.SUCCEEDED and double.refused_tokens == []
    assert double.tokens[-1][1]["exp"] == int(clock.now_s) + TOKEN_LIFETIME_S


@pytest.mark.parametrize(
    "body",
    [
        {"code": 0, "message": "SUCCEED", "data": {"task_id": "t-9", "task_status": "processing"}},
        {"task_id": "t-9", "task_status": "processing", "task_result": {}},
        {"id": "t-9", "status": "processing", "outputs": []},
    ],
)
def test_every_documented_callback_shape(body: dict[str, Any]) -> None:
    kling = adapter(None, NO_HTTP, Clock())
    event = kling.parse_webhook({}, json.dumps(body).encode())
    assert event.provider_job_id == "t-9"
    assert event.status is not None and event.status.state is ProviderState.RUNNING


def test_new_surface_success_callback_carries_the_video() -> None:
    body = {
        "id": "t-1",
        "status": "succeeded",
        "outputs": [{"type": "video", "id": "v", "url": "https://cdn.example/v.mp4"}],
    }
    event = adapter(None, NO_HTTP, Clock()).parse_webhook({}, json.dumps(body).encode())
    assert event.status is not None and event.status.video_url == "https://cdn.example/v.mp4"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"task_status": "succeed"}', b'{"task_id": "1", "task_status": "x"}'],
)
def test_malformed_callbacks_are_refused(body: bytes) -> None:
    with pytest.raises(WebhookParseError):
        adapter(None, NO_HTTP, Clock()).parse_webhook({}, body)


# -- property tests of the parsers of outside input ---------------------------------------------


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=json_values)
def test_task_parser_raises_only_provider_errors(data: Any) -> None:
    kling = adapter(None, NO_HTTP, Clock())
    for candidate in (data, {"task_status": "succeed", "task_result": data}, {"task": data}):
        if not isinstance(candidate, dict):
            continue
        try:
            status = kling.parse_task(candidate)
        except ProviderError:
            continue
        assert status.state in set(ProviderState)
        if status.state is ProviderState.SUCCEEDED:
            assert status.video_url and status.video_url.startswith(("http://", "https://"))


status_words = st.sampled_from(["submitted", "processing", "succeed", "succeeded", "failed"])


@settings(max_examples=300)
@given(
    task=st.fixed_dictionaries(
        {"task_id": st.text(max_size=8) | st.integers(), "task_status": status_words},
        optional={"task_status_msg": json_values, "task_result": json_values},
    ),
    wrapped=st.booleans(),
)
def test_callback_parser_reads_any_task(task: dict[str, Any], wrapped: bool) -> None:
    body = {"code": 0, "data": task} if wrapped else task
    kling = adapter(None, NO_HTTP, Clock())
    try:
        event = kling.parse_webhook({}, json.dumps(body).encode())
    except WebhookParseError:
        assert not str(task["task_id"]).strip()
        return
    assert event.provider_job_id == str(task["task_id"]).strip()
    assert event.status is not None


@settings(max_examples=300)
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_callback_parser_raises_only_webhook_errors(body: bytes) -> None:
    for secret in (None, VECTOR_SECRET):
        kling = adapter(None, NO_HTTP, Clock(VECTOR_TS), webhook_secret=secret)
        refused: WebhookRefused | None = None
        try:
            event = kling.parse_webhook(vector_headers(), body)
        except WebhookRefused as error:
            refused = error
        if refused is not None:
            assert refused.http_status in (400, 401)
        else:
            assert secret is None  # a random body never matches the vector's signature
            assert event.provider_job_id


@settings(max_examples=300)
@given(
    status=st.sampled_from([200, 400, 401, 403, 404, 429, 500, 503]),
    body=st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v).encode()),
    code=st.none() | st.integers(-5, 6000) | st.text(max_size=5),
)
def test_reply_reader_raises_only_provider_errors(status: int, body: bytes, code: Any) -> None:
    kling = adapter(None, NO_HTTP, Clock())
    bodies = [body, json.dumps({"code": code, "message": "m", "data": {}}).encode()]
    for raw in bodies:
        reply = HttpReply(status, {}, raw, "kling")
        failed: ProviderError | None = None
        try:
            kling._data(reply, creating=True)
        except ProviderError as error:
            failed = error
        if status >= 300:
            assert failed is not None  # an HTTP failure is never read as data
        if failed is not None:
            assert failed.kind in set(ErrorKind) and failed.provider == "kling"

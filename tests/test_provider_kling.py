"""Kling-only behaviour against its double: settings, the JWT on every call (claims, renewal, what
the double refuses), the kind of the create in the poll path, the double's concurrency cap, and
callbacks (the official Standard Webhooks test vector, one per status change, unsigned, late, the
shapes the docs disagree on). What every vendor shares is in tests/test_provider_contract.py;
Kling's facts for it, with the business-code table and the v3 create bodies (durations as strings,
sound, multi_prompt, voice_list), are in tests/provider_cases/kling.py; image-to-video fields in
tests/test_provider_images.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.pricing import PriceTable
from bot.providers import build_provider
from bot.providers.base import ProviderJob, ProviderState
from bot.providers.capabilities import CAPABILITIES
from bot.providers.errors import ErrorKind, ProviderError, WebhookAuthError, WebhookParseError
from bot.providers.http import HttpReply, ProviderHttp
from bot.providers.kling import TOKEN_LIFETIME_S, TOKEN_RENEW_S, KlingProvider
from bot.request import VideoRequest
from bot.settings import KlingSettings, Settings
from tests.conftest import Received
from tests.provider_cases.case import Setup
from tests.provider_cases.kling import CASE, CREATE_PATH, SECRET, Clock, adapter, verifier
from tests.provider_doubles.kling import ACCESS_KEY, KlingDouble, KlingJob, make_token
from tests.provider_support import (
    NO_HTTP,
    NOW,
    PLAIN,
    Make,
    case,
    double,
    http,
    json_values,
    make,
    narrow,
)

__all__ = ["CASE", "case", "double", "http", "make"]
# the official Standard Webhooks test vector (kling_official_and_i2v.md section 1.7)
VECTOR_SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
VECTOR_ID = "9876543210"
VECTOR_TS = 1781080794
VECTOR_BODY = (
    b'{"id":"1234567890","status":"succeeded","message":"","create_time":1781080778802,'
    b'"update_time":1781080794151}'
)
VECTOR_SIGNATURE = "v1,UsKlJP00XoQyOn410NM9xv34sP+Gl0jnOO9Lcpr7NJ4="


@pytest.fixture
def clock(double: KlingDouble) -> Clock:
    """The double's clock (NOW at the start), which a test moves for it and `on_clock` adapters."""
    return narrow(double.clock, Clock)


def on_clock(double: KlingDouble, http: ProviderHttp, **options: Any) -> KlingProvider:
    """An adapter on the double's own clock; `options` as tests/provider_cases/kling.adapter."""
    setup = Setup(origin=double.base_url, key=ACCESS_KEY)
    return adapter(http, setup, clock=narrow(double.clock, Clock), **options)


def job_of(double: KlingDouble, job_id: str) -> KlingJob:
    return narrow(double.jobs[job_id], KlingJob)


# -- settings ---------------------------------------------------------------------------------


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


# -- the JWT ----------------------------------------------------------------------------------


async def test_every_call_carries_a_valid_jwt(double: KlingDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    for _ in range(3):
        await provider.poll(sub.job)
    assert double.refused_tokens == []
    assert len(double.tokens) == len(double.requests) == 4
    for request in double.requests:
        assert (request.header("Authorization") or "").startswith("Bearer ey")
    for head, claims in double.tokens:  # as the double's own code reads them
        assert head == {"alg": "HS256", "typ": "JWT"}
        assert claims == {"iss": ACCESS_KEY, "exp": NOW + 1800, "nbf": NOW - 5}


async def test_the_token_is_renewed_before_it_expires(
    double: KlingDouble, http: ProviderHttp, clock: Clock
) -> None:
    provider = on_clock(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    first = provider.token()
    clock.now_s = NOW + TOKEN_LIFETIME_S - TOKEN_RENEW_S - 1  # still well within its life
    await provider.poll(sub.job)
    assert provider.token() == first
    clock.now_s = NOW + TOKEN_LIFETIME_S - TOKEN_RENEW_S  # five minutes left: a new one
    await provider.poll(sub.job)
    assert provider.token() != first
    assert double.tokens[-1][1] == {
        "iss": ACCESS_KEY,
        "exp": int(clock.now_s) + 1800,
        "nbf": int(clock.now_s) - 5,
    }
    clock.now_s = NOW + 10 * TOKEN_LIFETIME_S  # long after: never sends an expired token
    await provider.poll(sub.job)
    assert double.refused_tokens == []


async def test_the_double_refuses_bad_tokens(double: KlingDouble, http: ProviderHttp) -> None:
    """What the adapter must get right: the double checks signature, issuer, exp and nbf."""
    url = f"{double.base_url}/v1/videos/text2video/1"
    good = {"iss": ACCESS_KEY, "exp": NOW + 1800, "nbf": NOW - 5}
    cases: list[tuple[dict[str, str], int]] = [
        ({}, 1001),
        ({"Authorization": "Bearer  x.y.z"}, 1002),
        ({"Authorization": f"Bearer {make_token(good, 'wrong-secret')}"}, 1002),
        ({"Authorization": f"Bearer {make_token({**good, 'iss': 'other'})}"}, 1002),
        ({"Authorization": f"Bearer {make_token({**good, 'nbf': NOW + 60})}"}, 1003),
        ({"Authorization": f"Bearer {make_token({**good, 'exp': NOW})}"}, 1004),
        ({"Authorization": f"Bearer {make_token({'iss': ACCESS_KEY, 'exp': NOW + 9})}"}, 1002),
    ]
    for headers, code in cases:
        reply = await http.call("GET", url, provider="kling", headers=headers)
        assert (reply.status, reply.json_object()["code"]) == (401, code)
    reply = await http.call(
        "GET", url, provider="kling", headers={"Authorization": f"Bearer {make_token(good)}"}
    )
    assert reply.json_object()["code"] == 1203  # the token passed; no such task


async def test_a_wrong_secret_key_is_an_auth_error(double: KlingDouble, http: ProviderHttp) -> None:
    with pytest.raises(ProviderError) as info:
        await on_clock(double, http, secret_key="not-the-secret").submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.AUTH and info.value.vendor_code == "1002"
    assert double.jobs == {}


async def test_missing_keys_refuse_without_a_request(
    double: KlingDouble, http: ProviderHttp
) -> None:
    settings = KlingSettings(access_key=SecretStr("ak"), base_url=double.base_url)
    with pytest.raises(ProviderError) as info:
        await KlingProvider(settings, http).submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.AUTH and "SECRET_KEY" in info.value.detail
    assert double.requests == []


# -- creates and polls ------------------------------------------------------------------------


async def test_audio_left_open_is_off(double: KlingDouble, make: Make) -> None:
    await make().submit(VideoRequest(prompt="a cat", resolution=None, audio=None), webhook_url=None)
    body = double.creates_of(CREATE_PATH)[0].json
    assert body["sound"] == "off" and body["mode"] == "pro"


async def test_poll_uses_the_kind_of_the_create(double: KlingDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    with pytest.raises(ProviderError) as info:  # the real API's paths must match the create
        await provider.poll(ProviderJob(sub.job.id, {"kind": "image2video"}))
    assert info.value.kind is ErrorKind.NOT_FOUND
    assert (await provider.poll(ProviderJob(sub.job.id))).state is ProviderState.QUEUED
    polled = [r.path for r in double.requests if r.method == "GET"]
    assert polled == [f"/v1/videos/image2video/{sub.job.id}", f"{CREATE_PATH}/{sub.job.id}"]


async def test_more_live_tasks_than_the_resource_pack_allows(
    double: KlingDouble, make: Make
) -> None:
    double.max_parallel = 1
    provider = make()
    await provider.submit(PLAIN, webhook_url=None)
    with pytest.raises(ProviderError) as info:  # the double's own concurrency cap
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.RATE_LIMITED and info.value.vendor_code == "1303"
    assert info.value.retry_after_s == 1.0 and "parallel task" in info.value.detail
    assert len(double.jobs) == 1


# -- callbacks: the official test vector ------------------------------------------------------


def vector_headers(*, drop: str = "", **changes: str) -> dict[str, str]:
    headers = {
        "Webhook-Id": VECTOR_ID,
        "Webhook-Timestamp": str(VECTOR_TS),
        "Webhook-Signature": VECTOR_SIGNATURE,
    }
    return {k: v for k, v in {**headers, **changes}.items() if k != drop}


def test_the_standard_webhooks_test_vector_is_accepted() -> None:
    event = verifier(VECTOR_SECRET, now_s=VECTOR_TS + 30).parse_webhook(
        vector_headers(), VECTOR_BODY
    )
    assert event.provider_job_id == "1234567890" and event.delivery_id == VECTOR_ID
    assert event.status is not None  # "succeeded" without outputs: a hint, not a result
    assert event.status.state is ProviderState.RUNNING


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (vector_headers(), VECTOR_BODY.replace(b"succeeded", b"succeedeD")),
        (vector_headers(**{"Webhook-Id": "9876543211"}), VECTOR_BODY),
        (vector_headers(drop="Webhook-Id"), VECTOR_BODY),
        (vector_headers(**{"Webhook-Timestamp": str(VECTOR_TS + 1)}), VECTOR_BODY),
        (vector_headers(**{"Webhook-Signature": "v1,AAAA" + VECTOR_SIGNATURE[7:]}), VECTOR_BODY),
        (vector_headers(**{"Webhook-Signature": "v2," + VECTOR_SIGNATURE[3:]}), VECTOR_BODY),
        ({"Content-Type": "application/json"}, VECTOR_BODY),
    ],
)
def test_a_forged_callback_is_refused(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(WebhookAuthError):
        verifier(VECTOR_SECRET, now_s=VECTOR_TS).parse_webhook(headers, body)


@pytest.mark.parametrize("offset_s", [301, -301, 86_400])
def test_a_stale_callback_is_refused(offset_s: int) -> None:
    with pytest.raises(WebhookAuthError) as info:
        verifier(VECTOR_SECRET, now_s=VECTOR_TS + offset_s).parse_webhook(
            vector_headers(), VECTOR_BODY
        )
    assert "off" in info.value.detail


def test_rotation_accepts_any_listed_signature() -> None:
    headers = vector_headers(**{"Webhook-Signature": f"v1,b2xk {VECTOR_SIGNATURE}"})
    event = verifier(VECTOR_SECRET, now_s=VECTOR_TS).parse_webhook(headers, VECTOR_BODY)
    assert event.delivery_id == VECTOR_ID


# -- callbacks over HTTP ----------------------------------------------------------------------


async def test_a_callback_on_every_status_change(
    double: KlingDouble, make: Make, receiver: tuple[str, Received]
) -> None:
    url, received = receiver
    provider = make()  # the case's adapter and double share the webhook secret
    sub = await provider.submit(PLAIN, webhook_url=url)
    job = job_of(double, sub.job.id)
    assert job.webhook_url == url
    for state, msg_id in [("running", "msg-1"), ("succeeded", "msg-2"), ("failed", "msg-3")]:
        assert await double.send_callback(job, state=state, msg_id=msg_id) == 200
    events = [provider.parse_webhook(headers, body) for headers, body in received]
    assert [e.delivery_id for e in events] == ["msg-1", "msg-2", "msg-3"]
    assert all(e.provider_job_id == sub.job.id for e in events)
    assert [e.status.state if e.status else None for e in events] == [
        ProviderState.RUNNING,
        ProviderState.SUCCEEDED,
        ProviderState.FAILED,
    ]
    assert events[1].status is not None and events[1].status.video_url == double.file_url(job.id)


async def test_unsigned_callbacks_rely_on_the_url_token(
    double: KlingDouble, http: ProviderHttp, receiver: tuple[str, Received]
) -> None:
    url, received = receiver
    double.webhook_secret = None  # no secret in Kling's console: it signs nothing
    provider = on_clock(double, http, webhook_secret=None)
    sub = await provider.submit(PLAIN, webhook_url=url)
    await double.send_callback(job_of(double, sub.job.id))
    [(headers, body)] = received
    assert "webhook-signature" not in {k.lower() for k in headers}
    event = provider.parse_webhook(headers, body)
    assert event.provider_job_id == sub.job.id and event.delivery_id is None
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    # with a secret configured, the same unsigned delivery is refused
    with pytest.raises(WebhookAuthError):
        on_clock(double, http, webhook_secret=SECRET).parse_webhook(headers, body)


async def test_a_late_callback_after_the_token_expired(
    double: KlingDouble, http: ProviderHttp, clock: Clock, receiver: tuple[str, Received]
) -> None:
    """The job outlives its JWT: the callback still verifies, and the poll it triggers signs anew."""
    url, received = receiver
    provider = on_clock(double, http)
    sub = await provider.submit(PLAIN, webhook_url=url)
    job = job_of(double, sub.job.id)
    job.script = ["succeeded"]
    clock.now_s = NOW + 2 * TOKEN_LIFETIME_S  # the submit's token died an hour ago
    await double.send_callback(job, msg_id="late-1")
    await double.send_callback(job, msg_id="late-2", timestamp=NOW + 60)  # signed long ago
    fresh, stale = received
    event = provider.parse_webhook(*fresh)
    assert event.delivery_id == "late-1" and event.status is not None
    assert event.status.state is ProviderState.SUCCEEDED
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(*stale)
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.SUCCEEDED and double.refused_tokens == []
    assert double.tokens[-1][1]["exp"] == int(clock.now_s) + TOKEN_LIFETIME_S


# -- callback shapes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"code": 0, "message": "SUCCEED", "data": {"task_id": "t-9", "task_status": "processing"}},
        {"task_id": "t-9", "task_status": "processing", "task_result": {}},
        {"id": "t-9", "status": "processing", "outputs": []},
    ],
)
def test_every_documented_callback_shape(body: dict[str, Any]) -> None:
    event = verifier().parse_webhook({}, json.dumps(body).encode())
    assert event.provider_job_id == "t-9"
    assert event.status is not None and event.status.state is ProviderState.RUNNING


def test_new_surface_success_callback_carries_the_video() -> None:
    body = {
        "id": "t-1",
        "status": "succeeded",
        "outputs": [{"type": "video", "id": "v", "url": "https://cdn.example/v.mp4"}],
    }
    event = verifier().parse_webhook({}, json.dumps(body).encode())
    assert event.status is not None and event.status.video_url == "https://cdn.example/v.mp4"


# -- property tests of the readers of outside input -------------------------------------------


@settings(max_examples=300)
@given(result=json_values, word=st.sampled_from(["succeed", "succeeded"]))
def test_a_finished_task_has_a_web_video_or_is_still_running(result: Any, word: str) -> None:
    provider = verifier()
    for task in ({"task_status": word, "task_result": result}, {"status": word, "outputs": result}):
        status = provider.parse_task(task)
        if status.state is ProviderState.SUCCEEDED:
            assert status.video_url and status.video_url.startswith(("http://", "https://"))
        else:
            assert status.state is ProviderState.RUNNING and status.video_url is None


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
    try:
        event = verifier().parse_webhook({}, json.dumps(body).encode())
    except WebhookParseError:
        assert not str(task["task_id"]).strip()
        return
    assert event.provider_job_id == str(task["task_id"]).strip()
    assert event.status is not None


@settings(max_examples=300)
@given(
    status=st.sampled_from([200, 400, 401, 403, 404, 429, 500, 503]),
    body=st.binary(max_size=100) | json_values.map(lambda v: json.dumps(v).encode()),
    code=st.none() | st.integers(-5, 6000) | st.text(max_size=5),
)
def test_reply_reader_raises_only_provider_errors(status: int, body: bytes, code: Any) -> None:
    provider = verifier()
    bodies = [body, json.dumps({"code": code, "message": "m", "data": {}}).encode()]
    for raw in bodies:
        reply = HttpReply(status, {}, raw, "kling")
        failed: ProviderError | None = None
        try:
            provider.read_reply(reply, creating=True)
        except ProviderError as error:
            failed = error
        if status >= 300:
            assert failed is not None  # an HTTP failure is never read as data
        if failed is not None:
            assert failed.kind in set(ErrorKind) and failed.provider == "kling"

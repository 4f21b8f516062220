"""fal.ai-only behaviour against its double: the tier endpoints, a strict schema, job URLs,
result replies, and the JWKS behind its signed webhooks (fetch, rotation, refresh). What every
vendor shares is in tests/test_provider_contract.py (fal's facts for it:
tests/provider_cases/fal.py)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind, ProviderError, WebhookAuthError
from bot.providers.fal import FalProvider
from bot.providers.http import ProviderHttp
from tests.provider_cases.case import Setup
from tests.provider_cases.fal import CASE, FIRST_ID, MODEL_PATH, adapter, parser, sign, verifier
from tests.provider_doubles.fal import API_KEY, FalDouble, FalJob
from tests.provider_support import NOW, PLAIN, Make, case, double, http, json_values, make, narrow

__all__ = ["CASE", "case", "double", "http", "make"]


@pytest.mark.parametrize(
    ("resolution", "tier"),
    [("720p", "standard"), ("1080p", "pro"), ("4k", "4k"), (None, "pro")],
)
async def test_resolution_picks_the_endpoint(
    double: FalDouble, make: Make, resolution: Any, tier: str
) -> None:
    request = PLAIN.model_copy(update={"resolution": resolution, "audio": None})
    sub = await make().submit(request, webhook_url=None)
    [create] = double.creates_of("/text-to-video")
    assert create.path == f"/fal-ai/kling-video/v3/{tier}/text-to-video"
    assert "resolution" not in create.json
    assert create.json["generate_audio"] is True  # fal's default when the request leaves it open
    assert narrow(double.jobs[sub.job.id], FalJob).tier == tier


async def test_status_is_not_on_the_model_path(double: FalDouble) -> None:
    """The documented gotcha the double keeps: status lives on the app path, not the model's."""
    path = f"{double.base_url}{MODEL_PATH}/requests/{FIRST_ID}/status"
    auth = {"Authorization": f"Key {API_KEY}"}
    async with aiohttp.ClientSession() as session, session.get(path, headers=auth) as response:
        assert response.status == 405


async def test_job_urls_are_rebuilt_and_foreign_ones_ignored(double: FalDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    narrow(double.jobs[sub.job.id], FalJob).script = ["succeeded"]
    foreign = {
        "status_url": "http://127.0.0.1:1/steal/status",
        "response_url": "https://evil.example/steal",
    }
    for job in (ProviderJob(sub.job.id), ProviderJob(sub.job.id, foreign)):
        status = await provider.poll(job)
        assert status.state is ProviderState.SUCCEEDED
    app = f"/fal-ai/kling-video/requests/{sub.job.id}"
    assert [r.path for r in double.requests if r.method == "GET"] == [f"{app}/status", app] * 2


async def test_a_finished_request_cannot_be_cancelled(double: FalDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert await provider.cancel(sub.job) is True
    assert await provider.cancel(sub.job) is False  # ALREADY_COMPLETED


# -- result replies ---------------------------------------------------------------------------


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
    result = parser().parse_result(status, {}, json.dumps(body).encode())
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
        parser().parse_result(status, {}, body)
    assert info.value.kind is kind


def test_result_without_video_is_a_failure() -> None:
    result = parser().parse_result(200, {}, b'{"seed": 42}')
    assert result.state is ProviderState.FAILED
    assert result.error is not None and result.error.kind is ErrorKind.UNKNOWN


result_like = (
    json_values
    | st.fixed_dictionaries({"video": json_values})
    | st.fixed_dictionaries({"detail": json_values}, optional={"error_type": json_values})
)


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
        parser().parse_result(status, headers, body)


# -- webhooks and the JWKS behind them --------------------------------------------------------


async def test_prepare_webhooks_fetches_the_jwks_without_the_api_key(
    double: FalDouble, make: Make
) -> None:
    provider = narrow(make(), FalProvider)
    await provider.prepare_webhooks()
    [fetch] = [r for r in double.requests if r.path == "/.well-known/jwks.json"]
    assert fetch.method == "GET" and fetch.header("Authorization") is None
    assert len(provider.keys.keys) == 1


async def test_a_webhook_without_its_payload_is_a_bare_hint(
    double: FalDouble, make: Make, receiver: Any
) -> None:
    url, received = receiver
    provider = make()
    await provider.prepare_webhooks()
    sub = await provider.submit(PLAIN, webhook_url=None)
    await double.send_webhook(narrow(double.jobs[sub.job.id], FalJob), url, payload=False)
    bare = provider.parse_webhook(*received[0])
    assert bare.provider_job_id == sub.job.id and bare.status is None  # poll for the result


def test_error_webhook_with_a_server_error_is_transient() -> None:
    body = json.dumps(
        {
            "request_id": "r1",
            "gateway_request_id": "r1",
            "status": "ERROR",
            "error": "Invalid status code: 504",
            "payload": {"detail": "Request timed out", "error_type": "request_timeout"},
        }
    ).encode()
    event = verifier().parse_webhook(sign(body, ref="r1"), body)
    assert event.status is not None and event.status.state is ProviderState.FAILED
    assert event.status.error is not None and event.status.error.kind is ErrorKind.TRANSIENT
    assert event.status.error.vendor_code == "request_timeout"


async def test_rotated_key_triggers_one_background_refresh(double: FalDouble, make: Make) -> None:
    provider = narrow(make(now_s=NOW), FalProvider)
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
    assert provider.key_refresh is refresh and refresh.done(), "no other refresh was started"
    assert double.jwks_fetches == 2


async def test_stale_or_incomplete_deliveries_trigger_no_fetch(
    double: FalDouble, make: Make
) -> None:
    provider = narrow(make(now_s=NOW), FalProvider)
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
    setup = Setup(origin=double.base_url, key="", now_s=NOW)
    provider = adapter(http, setup, keys_ttl_s=0.0)
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
    double: FalDouble, make: Make, reply: tuple[int, Any], kind: ErrorKind
) -> None:
    double.jwks_reply = reply
    with pytest.raises(ProviderError) as info:
        await make().prepare_webhooks()
    assert info.value.kind is kind

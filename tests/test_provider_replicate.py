"""Replicate-only behaviour against its double: multi-shot as a JSON string, resolution as the
mode, a strict schema, removed outputs, and the webhook secret (configured or fetched). What every
vendor shares is in tests/test_provider_contract.py (Replicate's facts for it:
tests/provider_cases/replicate.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind, ProviderError, WebhookAuthError
from bot.providers.http import ProviderHttp
from bot.providers.replicate import ReplicateProvider
from tests.provider_cases.case import Setup
from tests.provider_cases.replicate import CASE, CREATE_PATH, SECRET, adapter, parser, sign
from tests.provider_doubles.replicate import API_TOKEN, ReplicateDouble, ReplicateJob
from tests.provider_support import MULTI, PLAIN, Make, case, double, http, make, narrow

__all__ = ["CASE", "case", "double", "http", "make"]


async def test_multishot_request_on_the_wire(double: ReplicateDouble, make: Make) -> None:
    await make().submit(MULTI, webhook_url=None)
    data = double.creates_of(CREATE_PATH)[0].json["input"]
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
    double: ReplicateDouble, make: Make, resolution: Any, mode: str
) -> None:
    request = PLAIN.model_copy(update={"resolution": resolution, "audio": None})
    await make().submit(request, webhook_url=None)
    data = double.creates_of(CREATE_PATH)[0].json["input"]
    assert data["mode"] == mode
    assert data["generate_audio"] is False  # Replicate's default when the request leaves it open


def test_output_may_be_a_list() -> None:
    status = parser().parse_status(
        {"status": "succeeded", "output": ["https://replicate.delivery/x/v.mp4"]}
    )
    assert status.video_url == "https://replicate.delivery/x/v.mp4"


async def test_removed_output_is_result_expired(double: ReplicateDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = narrow(double.jobs[sub.job.id], ReplicateJob)
    job.script, job.removed = ["succeeded"], True
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.vendor_status == "succeeded"
    assert status.error is not None and status.error.kind is ErrorKind.RESULT_EXPIRED


async def test_only_a_live_prediction_can_be_cancelled(double: ReplicateDouble, make: Make) -> None:
    provider = make()
    done = await provider.submit(PLAIN, webhook_url=None)
    narrow(double.jobs[done.job.id], ReplicateJob).script = ["succeeded"]
    assert await provider.cancel(done.job) is False  # it had already finished
    assert await provider.cancel(ProviderJob("nosuchprediction")) is False


# -- the webhook secret -----------------------------------------------------------------------


async def test_configured_secret_needs_no_fetch(
    double: ReplicateDouble, http: ProviderHttp
) -> None:
    provider = adapter(http, Setup(origin=double.base_url, key=API_TOKEN), secret=SECRET)
    await provider.prepare_webhooks()
    assert double.requests == [] and provider.webhook_secret == SECRET


async def test_prepare_webhooks_fetches_the_default_secret(
    double: ReplicateDouble, make: Make
) -> None:
    provider = narrow(make(), ReplicateProvider)
    await provider.prepare_webhooks()
    [fetch] = double.requests
    assert (fetch.method, fetch.path) == ("GET", "/v1/webhooks/default/secret")
    assert fetch.header("Authorization") == f"Bearer {API_TOKEN}"
    assert provider.webhook_secret == double.webhook_secret


async def test_prepare_webhooks_failure(make: Make) -> None:
    with pytest.raises(ProviderError) as info:
        await make(key="r8_wrong").prepare_webhooks()
    assert info.value.kind is ErrorKind.AUTH


def test_one_of_several_signatures_is_enough() -> None:
    body = b'{"id": "p1", "status": "failed", "error": "boom"}'
    headers = sign(body)
    headers["webhook-signature"] = "v1,b2xkc2lnbmF0dXJl " + headers["webhook-signature"]
    event = parser(SECRET).parse_webhook(headers, body)
    assert event.status is not None and event.status.state is ProviderState.FAILED


def test_webhook_without_any_secret_is_refused() -> None:
    provider = parser()
    body = b'{"id": "p1", "status": "succeeded", "output": "https://x/v.mp4"}'
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(sign(body), body)
    assert provider.secret_fetch is None  # no event loop here: nothing was started

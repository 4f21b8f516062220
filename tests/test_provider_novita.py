"""Novita-only behaviour against its double: the resolution picks the endpoint, a webhook the
endpoint refuses is dropped, failure text fallbacks, bare task webhooks, defaults. What every
vendor shares is in tests/test_provider_contract.py (Novita's facts for it:
tests/provider_cases/novita.py)."""

from __future__ import annotations

import json

import pytest

from bot.providers.base import ProviderState
from bot.providers.capabilities import CAPABILITIES
from bot.providers.errors import ErrorKind, ProviderError
from bot.request import VideoRequest
from tests.provider_cases.novita import CASE, CREATE_PATH, FIRST_ID, HOOK, novita_error, parser
from tests.provider_doubles.novita import NovitaDouble
from tests.provider_support import PLAIN, Make, case, double, http, make

__all__ = ["CASE", "case", "double", "http", "make"]


@pytest.mark.parametrize(
    ("resolution", "path"),
    [
        ("720p", "/v3/async/kling-v3.0-std-t2v"),
        ("1080p", CREATE_PATH),
        ("4k", "/v3/async/kling-v3.0-4k-t2v"),
        (None, CREATE_PATH),
    ],
)
async def test_resolution_picks_the_endpoint(
    double: NovitaDouble, make: Make, resolution: str | None, path: str
) -> None:
    request = PLAIN.model_copy(update={"resolution": resolution})
    sub = await make().submit(request, webhook_url=None)
    assert [r.path for r in double.requests] == [path]
    assert "resolution" not in double.requests[0].json
    assert sub.job.data["endpoint"] == path.rsplit("/", 1)[1]


async def test_webhook_refused_by_the_endpoint_is_dropped(double: NovitaDouble, make: Make) -> None:
    double.accept_extra = False
    sub = await make().submit(PLAIN, webhook_url=HOOK)
    first, second = double.creates_of(CREATE_PATH)
    assert first.json["extra"] == {"webhook": {"url": HOOK}}
    assert "extra" not in second.json
    assert {k: v for k, v in first.json.items() if k != "extra"} == second.json
    assert double.creates == 2 and len(double.jobs) == 1
    assert sub.job.id == FIRST_ID


async def test_other_refusals_are_not_resent(double: NovitaDouble, make: Make) -> None:
    refusal = novita_error(400, "INVALID_REQUEST_BODY", "duration must be 3..15")
    double.next_create("status", 400, refusal)
    with pytest.raises(ProviderError) as info:
        await make().submit(PLAIN, webhook_url=HOOK)
    assert info.value.kind is ErrorKind.INVALID_INPUT
    assert double.creates == 1


def test_failure_text_falls_back_to_err_detail() -> None:
    status = parser().parse_status(
        {"task": {"status": "TASK_STATUS_FAILED", "reason": "", "err_detail": "risk control"}}
    )
    assert status.error is not None and status.error.kind is ErrorKind.CONTENT_POLICY
    assert status.error.detail == "risk control"


def test_bare_task_result_webhook_is_accepted() -> None:
    body = json.dumps(
        {"task": {"task_id": "t9", "status": "TASK_STATUS_PROCESSING", "progress_percent": 55}}
    ).encode()
    event = parser().parse_webhook({}, body)
    assert event.provider_job_id == "t9" and event.status is not None
    assert event.status.state is ProviderState.RUNNING and event.status.progress_pct == 55


def test_novita_defaults() -> None:
    # audio off unless asked (the seed's `sound` default), and the pro endpoint by default
    resolved = CAPABILITIES["novita"].resolve(VideoRequest(prompt="x"))
    assert (resolved.audio, resolved.resolution) == (False, "1080p")

"""AIHubMax-only behaviour against its double: create reply values, resolution, the callback URL
it may refuse, result shapes and the "completed before the URL" race, cancelled tasks. What every
vendor shares is in tests/test_provider_contract.py (AIHubMax's facts for it:
tests/provider_cases/aihubmax.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.providers.base import ProviderState
from bot.providers.errors import ErrorKind, ProviderError
from tests.provider_cases.aihubmax import CASE, CREATE_PATH, HOOK, parser
from tests.provider_doubles.aihubmax import AIHubMaxDouble
from tests.provider_support import PLAIN, Make, case, double, http, make

__all__ = ["CASE", "case", "double", "http", "make"]


async def test_create_reply_values_are_kept(double: AIHubMaxDouble, make: Make) -> None:
    reply = {
        "id": "task-unified-1757165031-uyujaw3d",
        "object": "video.generation.task",
        "status": "processing",
        "progress": 3,
        "usage": {"credits_reserved": 12345678},
    }
    double.next_create("status", 200, reply)
    sub = await make().submit(PLAIN, webhook_url=None)
    assert sub.job.id == "task-unified-1757165031-uyujaw3d"
    assert dict(sub.job.data) == {"credits_reserved": "12345678"}
    assert sub.status.state is ProviderState.RUNNING and sub.status.progress_pct == 3
    assert sub.status.eta_s is None


@pytest.mark.parametrize(("resolution", "sent"), [("720p", "720p"), ("4k", "4k"), (None, "1080p")])
async def test_resolution_on_the_wire(
    double: AIHubMaxDouble, make: Make, resolution: str | None, sent: str
) -> None:
    await make().submit(PLAIN.model_copy(update={"resolution": resolution}), webhook_url=None)
    assert double.creates_of(CREATE_PATH)[0].json["resolution"] == sent


# -- the callback URL, when AIHubMax refuses it -----------------------------------------------


async def test_refused_callback_url_is_dropped_and_the_job_polled(
    double: AIHubMaxDouble, make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    double.accept_callback = False
    sub = await make().submit(PLAIN, webhook_url=HOOK)
    first, second = double.creates_of(CREATE_PATH)
    assert first.json["callback_url"] == HOOK
    assert "callback_url" not in second.json
    assert {k: v for k, v in first.json.items() if k != "callback_url"} == second.json
    assert double.creates == 2 and list(double.jobs) == [sub.job.id]
    assert double.jobs[sub.job.id].webhook_url is None
    assert "refused callback_url (HTTP 400" in caplog.text


async def test_plain_http_callback_is_refused_then_dropped(
    double: AIHubMaxDouble, make: Make
) -> None:
    sub = await make().submit(PLAIN, webhook_url="http://bot.example/hook")
    assert double.creates == 2 and list(double.jobs) == [sub.job.id]
    assert "callback_url" not in double.creates_of(CREATE_PATH)[1].json


async def test_other_refusals_are_not_resent(double: AIHubMaxDouble, make: Make) -> None:
    refusal = {
        "code": 400,
        "message": "prompt too long",
        "type": "invalid_request_error",
        "param": "prompt",
    }
    double.next_create("status", 400, {"error": refusal})
    with pytest.raises(ProviderError) as info:
        await make().submit(PLAIN, webhook_url=HOOK)
    assert info.value.kind is ErrorKind.INVALID_INPUT and double.creates == 1


# -- results ----------------------------------------------------------------------------------


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


@pytest.mark.parametrize("result_format", ["objects", "strings", "result_data"])
async def test_completed_before_the_url_then_every_result_format(
    double: AIHubMaxDouble, make: Make, result_format: str
) -> None:
    """The documented race: "completed" comes before the result URL is attached."""
    double.result_format = result_format
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    double.jobs[sub.job.id].script = ["completed_no_results", "completed"]
    racing, done = [await provider.poll(sub.job) for _ in range(2)]
    assert (racing.state, racing.vendor_status, racing.progress_pct) == (
        ProviderState.RUNNING,
        "completed",
        99,
    )
    assert racing.video_url is None
    assert (done.state, done.vendor_status, done.progress_pct) == (
        ProviderState.SUCCEEDED,
        "completed",
        100,
    )
    assert done.video_url == double.file_url(sub.job.id)


async def test_cancelled_request_is_a_cancelled_job(double: AIHubMaxDouble, make: Make) -> None:
    provider = make()
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


def test_callback_in_a_data_envelope_and_with_task_id() -> None:
    body = {"data": {"task_id": "task-unified-1-abc", "status": "processing", "progress": 12}}
    event = parser().parse_webhook({}, json.dumps(body).encode())
    assert event.provider_job_id == "task-unified-1-abc"
    assert event.status is not None and event.status.state is ProviderState.RUNNING
    assert event.status.progress_pct == 12

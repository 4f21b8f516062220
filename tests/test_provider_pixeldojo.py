"""PixelDojo-only behaviour against its double: create reply values, the statusUrl it returns,
progress, other failure and webhook shapes. What every vendor shares is in
tests/test_provider_contract.py (PixelDojo's facts for it: tests/provider_cases/pixeldojo.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind
from bot.providers.pixeldojo import PixelDojoProvider
from bot.settings import PixelDojoSettings
from tests.provider_cases.pixeldojo import CASE, parser
from tests.provider_doubles.pixeldojo import PixelDojoDouble
from tests.provider_support import NO_HTTP, PLAIN, Make, case, double, http, make, narrow

__all__ = ["CASE", "case", "double", "http", "make"]


async def test_create_reply_values_are_kept(double: PixelDojoDouble, make: Make) -> None:
    reply = {
        "jobId": "job_abc123",
        "status": "pending",
        "statusUrl": f"{double.api_base}/jobs/job_abc123",
        "creditCost": 1234567,
        "creditsRemaining": 95,
        "expiresAt": "2025-01-23T12:00:00Z",
    }
    double.next_create("status", 202, reply)
    sub = await make().submit(PLAIN, webhook_url=None)
    assert sub.job.id == "job_abc123"
    assert dict(sub.job.data) == {
        "status_url": f"{double.api_base}/jobs/job_abc123",
        "credit_cost": "1234567",
    }


def test_progress_is_read_when_present() -> None:
    status = parser().parse_status({"status": "processing", "progress": 42})
    assert status.state is ProviderState.RUNNING and status.progress_pct == 42
    assert parser().parse_status({"status": "processing", "progress": "nope"}).progress_pct is None


async def test_poll_without_status_url_uses_the_jobs_path(
    double: PixelDojoDouble, make: Make
) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    status = await provider.poll(ProviderJob(sub.job.id))
    assert status.state is ProviderState.QUEUED
    assert double.requests[-1].path == "/api/v1/jobs/job_000001"


async def test_status_url_on_another_host_is_never_used(
    double: PixelDojoDouble, make: Make
) -> None:
    double.status_host = "http://attacker.invalid/api/v1"
    provider = narrow(make(), PixelDojoProvider)
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert "status_url" not in sub.job.data
    forged = ProviderJob(sub.job.id, {"status_url": "http://attacker.invalid/jobs/job_000001"})
    assert provider.status_url(forged) == f"{double.api_base}/jobs/job_000001"
    assert (await provider.poll(forged)).state is ProviderState.QUEUED


def test_job_ids_are_quoted_into_the_path() -> None:
    provider = PixelDojoProvider(PixelDojoSettings(base_url="https://pd.example/api/v1"), NO_HTTP)
    assert provider.status_url(ProviderJob("../admin?x=1")) == (
        "https://pd.example/api/v1/jobs/..%2Fadmin%3Fx%3D1"
    )


@pytest.mark.parametrize(
    ("data", "kind", "code", "detail"),
    [
        (
            {
                "status": "failed",
                "error": {"code": "SAFETY", "message": "blocked by safety filter"},
            },
            ErrorKind.CONTENT_POLICY,
            "SAFETY",
            "blocked by safety filter",
        ),
        (
            {"status": "failed", "errorMessage": "server overloaded", "errorCode": "E503"},
            ErrorKind.TRANSIENT,
            "E503",
            "server overloaded",
        ),
        ({"status": "error"}, ErrorKind.UNKNOWN, None, "the job failed"),
        (
            {"status": "expired", "message": "job expired"},
            ErrorKind.RESULT_EXPIRED,
            None,
            "job expired",
        ),
    ],
)
def test_other_failure_shapes(
    data: dict[str, Any], kind: ErrorKind, code: str | None, detail: str
) -> None:
    status = parser().parse_status(data)
    assert status.state is ProviderState.FAILED and status.error is not None
    assert status.error.kind is kind
    assert status.error.vendor_code == code and status.error.detail == detail
    assert status.error.provider == "pixeldojo"


@pytest.mark.parametrize(
    ("body", "job_id", "state"),
    [
        ({"id": "job_7", "status": "processing"}, "job_7", ProviderState.RUNNING),
        (
            {
                "event": "job.completed",
                "data": {
                    "jobId": "job_8",
                    "status": "completed",
                    "output": {"video": "https://t.example/v.mp4"},
                },
            },
            "job_8",
            ProviderState.SUCCEEDED,
        ),
        (
            {"job": {"jobId": "job_9", "status": "failed", "error": "boom"}},
            "job_9",
            ProviderState.FAILED,
        ),
    ],
)
def test_other_webhook_shapes(body: dict[str, Any], job_id: str, state: ProviderState) -> None:
    event = parser().parse_webhook({}, json.dumps(body).encode())
    assert event.provider_job_id == job_id
    assert event.status is not None and event.status.state is state

"""PixelDojo facts for the shared contract suite.

The wire format is documented in tests/provider_doubles/pixeldojo.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind
from bot.providers.http import ProviderHttp
from bot.providers.pixeldojo import PixelDojoProvider
from bot.settings import PixelDojoSettings
from tests.provider_cases.case import Failure, Reply, Route, Setup, VendorCase, Webhooks
from tests.provider_doubles.base import FakeJob, VendorDouble
from tests.provider_doubles.pixeldojo import API_KEY, PixelDojoDouble
from tests.provider_support import (
    KLING_FULL,
    KLING_PLAIN,
    KLING_VOICE,
    MULTI,
    NO_HTTP,
    NOT_AN_OBJECT,
    NOT_JSON,
    PLAIN,
    PLAIN_FULL,
    SAMPLE_VIDEO,
    VOICE,
)
from tests.provider_support import json_values as any_json

HOOK = "https://bot.example/webhooks/pixeldojo/tok"
RUN_PATH = "/api/v1/models/kling-video-v3-pro-text/run"
FIRST_ID = "job_000001"
PARSER = PixelDojoProvider(PixelDojoSettings(), NO_HTTP)


def adapter(http: ProviderHttp, setup: Setup) -> PixelDojoProvider:
    settings = PixelDojoSettings(api_key=SecretStr(setup.key), base_url=f"{setup.origin}/api/v1")
    return PixelDojoProvider(settings, http, now_s=setup.clock())


def parser() -> PixelDojoProvider:
    """An adapter used only to parse (parsers are pure; one instance is shared)."""
    return PARSER


def poll_error(double: VendorDouble, reply: Reply) -> None:
    assert isinstance(double, PixelDojoDouble)
    double.next_poll(reply.status, reply.body, dict(reply.headers))


def fail_job(double: VendorDouble, job: FakeJob, failure: Failure) -> None:
    """The failure's message is all a PixelDojo job carries."""


def empty_account(double: VendorDouble) -> None:
    assert isinstance(double, PixelDojoDouble)
    double.credits = 39  # a 5 s video costs 40


async def send(double: VendorDouble, job: FakeJob, url: str, success: bool, variant: str) -> int:
    assert isinstance(double, PixelDojoDouble)
    return await double.send_webhook(job, url, success=success)


def flag(job: FakeJob) -> None:
    job.error = "Content flagged: nudity"


status_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(
            ["pending", "processing", "completed", "failed", "expired", "cancelled", "x"]
        )
        | any_json
    },
    optional={
        "jobId": st.text(max_size=10) | any_json,
        "output": any_json | st.fixed_dictionaries({"video": any_json}),
        "error": any_json,
        "progress": any_json,
    },
)


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


CASE = VendorCase(
    name="pixeldojo",
    double_type=PixelDojoDouble,
    adapter=adapter,
    parser=parser,
    api_key=API_KEY,
    wrong_key="pd_wrong",
    key_header=("Authorization", f"Bearer {API_KEY}"),
    hook=HOOK,
    routes=(Route("default", RUN_PATH, FIRST_ID),),
    plain_body={**KLING_PLAIN, "duration": 5, "webhook_url": HOOK},  # integer durations
    plain_job=lambda double: ProviderJob(
        FIRST_ID, {"status_url": f"{double.base_url}/api/v1/jobs/{FIRST_ID}", "credit_cost": "40"}
    ),
    plain_status={"state": ProviderState.QUEUED, "vendor_status": "pending"},
    wire=(
        ("full", PLAIN_FULL, {**KLING_FULL, "duration": 10}),
        (
            "multishot",
            MULTI,
            {
                "prompt": "A fox wakes up in its den\nThe fox runs across a snowy field",
                "multi_prompt": [
                    {"prompt": "A fox wakes up in its den", "duration": 3},
                    {"prompt": "The fox runs across a snowy field", "duration": 5},
                ],
                "duration": 8,
                "aspect_ratio": "1:1",
                "generate_audio": True,
            },
        ),
        ("voice", VOICE, {**KLING_VOICE, "duration": 5}),
    ),
    refused=(
        (
            "720p",
            PLAIN.model_copy(update={"resolution": "720p"}),
            ["PixelDojo renders 1080p only (got 720p)."],
        ),
    ),
    create_ok=202,
    create_errors=(
        Reply(400, {"error": "Invalid JSON body"}, ErrorKind.INVALID_INPUT),
        Reply(401, {"error": "Invalid API key"}, ErrorKind.AUTH),
        Reply(
            402, {"error": "Insufficient credits", "credits_remaining": 3}, ErrorKind.OUT_OF_FUNDS
        ),
        Reply(422, {"error": "Validation error", "details": ["duration"]}, ErrorKind.INVALID_INPUT),
        Reply(422, {"error": "Prompt violates our content policy"}, ErrorKind.CONTENT_POLICY),
        Reply(
            429,
            {"error": "Rate limit exceeded"},
            ErrorKind.RATE_LIMITED,
            {"Retry-After": "17"},
            retry_after_s=17,
        ),
        Reply(500, {"error": "internal"}, ErrorKind.TRANSIENT),
        Reply(503, "<html>Service Unavailable</html>", ErrorKind.TRANSIENT),
    ),
    malformed_creates=(
        *NOT_AN_OBJECT,
        b'{"jobId": "job_0000',
        b'{"status": "pending"}',
    ),
    empty_account=empty_account,
    script={"queued": "pending", "succeeded": "completed"},
    polls=(
        {"state": ProviderState.QUEUED, "vendor_status": "pending"},
        {"state": ProviderState.RUNNING, "vendor_status": "processing"},
        {"state": ProviderState.SUCCEEDED, "vendor_status": "completed", "progress_pct": 100},
    ),
    poll_gets=lambda job_id: [(f"/api/v1/jobs/{job_id}", {})] * 3,
    unknown_job="job_unknown",
    script_poll=poll_error,
    poll_errors=(
        Reply(200, b"{not json", ErrorKind.UNKNOWN),
        Reply(200, b'{"jobId": "job_000001", "status": "compl', ErrorKind.UNKNOWN),
        Reply(200, b"[]", ErrorKind.UNKNOWN),
        Reply(
            429,
            {"error": "Too many requests"},
            ErrorKind.RATE_LIMITED,
            {"Retry-After": "9"},
            retry_after_s=9,
        ),
        Reply(502, "<html>Bad Gateway</html>", ErrorKind.TRANSIENT),
        Reply(404, {"error": "Job not found"}, ErrorKind.NOT_FOUND),
    ),
    failures=(
        Failure("generation failed", ErrorKind.UNKNOWN),
        Failure(
            "Your prompt was flagged by the content moderation system", ErrorKind.CONTENT_POLICY
        ),
        Failure("NSFW content detected in output", ErrorKind.CONTENT_POLICY),
        Failure("Invalid parameter: duration", ErrorKind.INVALID_INPUT),
        Failure("Upstream timeout", ErrorKind.TRANSIENT),
        Failure("Insufficient credits", ErrorKind.OUT_OF_FUNDS),
    ),
    fail_job=fail_job,
    failed_status="failed",
    status_body=lambda word: {"jobId": "job_1", "status": word, "output": {"video": SAMPLE_VIDEO}},
    status_words=(
        ("pending", ProviderState.QUEUED),
        ("queued", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("running", ProviderState.RUNNING),
        ("in_progress", ProviderState.RUNNING),
        ("completed", ProviderState.SUCCEEDED),
        ("succeeded", ProviderState.SUCCEEDED),
        ("COMPLETED", ProviderState.SUCCEEDED),
        ("failed", ProviderState.FAILED),
        ("error", ProviderState.FAILED),
        ("expired", ProviderState.FAILED),
        ("cancelled", ProviderState.CANCELLED),
        ("canceled", ProviderState.CANCELLED),
    ),
    vendor_status=str.lower,
    status_fields=lambda word, state: {
        "progress_pct": 100 if state is ProviderState.SUCCEEDED else None
    },
    no_video_statuses=tuple(
        (
            {"jobId": "job_1", "status": "completed", "output": output},
            {"vendor_status": "completed"},
        )
        for output in [None, {}, {"video": None}, {"video": ""}, {"video": "ftp://x"}]
    ),
    progress_body=lambda value: {"id": "t1", "status": "processing", "progress": value},
    status_strategy=status_like | st.dictionaries(st.text(max_size=10), any_json, max_size=5),
    webhooks=Webhooks(
        send=send,
        flag=flag,
        bodies=st.binary(max_size=200)
        | any_json.map(encoded)
        | status_like.map(encoded)
        | status_like.map(lambda v: encoded({"data": v})),
        headers=st.just({}),
        parsers=(parser,),
        garbage=(
            *NOT_JSON,
            b'"completed"',
            b'{"jobId": "job_1", "status": "compl',
            b'{"status": "completed", "output": {"video": "https://x/v.mp4"}}',
            b'{"jobId": "job_1"}',
            b'{"jobId": "job_1", "status": "teleported"}',
            b'{"jobId": {"nested": 1}, "status": "completed"}',
        ),
    ),
)

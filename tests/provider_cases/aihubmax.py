"""AIHubMax facts for the shared contract suite.

The wire format is documented in tests/provider_doubles/aihubmax.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.aihubmax import AIHubMaxProvider
from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind
from bot.providers.http import ProviderHttp
from bot.request import Shot
from bot.settings import AIHubMaxSettings
from tests.provider_cases.case import Failure, Reply, Route, Setup, VendorCase, Webhooks
from tests.provider_doubles.aihubmax import API_KEY, AIHubMaxDouble
from tests.provider_doubles.base import FakeJob, VendorDouble
from tests.provider_support import (
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

CREATE_PATH = "/v1/videos/generations"
HOOK = "https://bot.example/webhooks/aihubmax/tok"
FIRST_ID = "task-unified-1757165031-job00001"
# AIHubMax has no cfg_scale or shot type, and makes 5 or 10 second videos only.
FULL_SUPPORTED = PLAIN_FULL.model_copy(update={"cfg_scale": None, "shot_type": None})
MULTI_10 = MULTI.model_copy(
    update={
        "duration_s": 10,
        "shots": (
            Shot(prompt="A fox wakes up in its den", duration_s=4),
            Shot(prompt="The fox runs across a snowy field", duration_s=6),
        ),
    }
)
# "completed" without a usable result (the documented race: the URL comes a moment later)
NOT_RESULTS: list[Any] = [
    None,
    [],
    [None],
    [{}],
    [{"url": None}],
    [""],
    "not-a-url",
    {"url": "ftp://x"},
]
PARSER = AIHubMaxProvider(AIHubMaxSettings(), NO_HTTP)


def adapter(http: ProviderHttp, setup: Setup) -> AIHubMaxProvider:
    settings = AIHubMaxSettings(api_key=SecretStr(setup.key), base_url=setup.origin)
    return AIHubMaxProvider(settings, http, now_s=setup.clock())


def parser() -> AIHubMaxProvider:
    """An adapter used only to parse (parsers are pure; one instance is shared)."""
    return PARSER


def evo_error(status: int, message: str, kind: str, **extra: Any) -> dict[str, Any]:
    """AIHubMax's error body: {"error": {code, message, type, ...}}."""
    return {"error": {"code": status, "message": message, "type": kind, **extra}}


RATE_LIMIT_60 = evo_error(
    429, "Rate limit exceeded", "rate_limit_error", fallback_suggestion="retry after 60 seconds"
)


def poll_error(double: VendorDouble, reply: Reply) -> None:
    assert isinstance(double, AIHubMaxDouble)
    double.next_poll(reply.status, reply.body, dict(reply.headers))


def fail_job(double: VendorDouble, job: FakeJob, failure: Failure) -> None:
    assert isinstance(failure.vendor_code, str)
    job.error_code = failure.vendor_code


def empty_account(double: VendorDouble) -> None:
    assert isinstance(double, AIHubMaxDouble)
    double.quota = 1000


async def send(double: VendorDouble, job: FakeJob, url: str, success: bool, variant: str) -> int:
    assert isinstance(double, AIHubMaxDouble)
    return await double.send_webhook(job, url, success=success)


def flag(job: FakeJob) -> None:
    job.error_code, job.error = "content_policy_violation", "Content policy violation."


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


task_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(
            ["pending", "processing", "completed", "failed", "cancelled", "x"]
        )
        | any_json
    },
    optional={
        "id": st.text(max_size=10) | any_json,
        "results": any_json,
        "result_data": any_json,
        "error": any_json | st.fixed_dictionaries({"code": any_json, "message": any_json}),
        "progress": any_json,
        "task_info": any_json | st.fixed_dictionaries({"estimated_time": any_json}),
    },
)


def status_fields(word: str, state: ProviderState) -> dict[str, Any]:
    """status_body says progress 30: kept while the task runs, 100 once it is done."""
    if state is ProviderState.SUCCEEDED:
        return {"progress_pct": 100}
    if state in (ProviderState.QUEUED, ProviderState.RUNNING):
        return {"progress_pct": 30}
    return {}


CASE = VendorCase(
    name="aihubmax",
    double_type=AIHubMaxDouble,
    adapter=adapter,
    parser=parser,
    api_key=API_KEY,
    wrong_key="sk-wrong",
    key_header=("Authorization", f"Bearer {API_KEY}"),
    hook=HOOK,
    routes=(Route("default", CREATE_PATH, FIRST_ID),),
    plain_body={
        "model": "kling-v3-text-to-video",
        "prompt": "A red fox running through snow",
        "resolution": "1080p",
        "duration": 5,
        "aspect_ratio": "16:9",
        "generate_audio": True,
        "callback_url": HOOK,
    },
    plain_job=lambda double: ProviderJob(FIRST_ID, {"credits_reserved": "270000"}),
    plain_status={
        "state": ProviderState.QUEUED,
        "vendor_status": "pending",
        "progress_pct": 0,
        "eta_s": 300,
    },
    wire=(
        (
            "supported-options",
            FULL_SUPPORTED,
            {
                "model": "kling-v3-text-to-video",
                "prompt": "A lighthouse at dusk, waves crashing",
                "negative_prompt": "blurry, watermark",
                "resolution": "1080p",
                "duration": 10,
                "aspect_ratio": "9:16",
                "generate_audio": False,
            },
        ),
        (
            "multishot",
            MULTI_10,
            {
                "model": "kling-v3-text-to-video",
                "prompt": "A fox wakes up in its den\nThe fox runs across a snowy field",
                "multi_prompt": [
                    {"prompt": "A fox wakes up in its den", "duration": 4},
                    {"prompt": "The fox runs across a snowy field", "duration": 6},
                ],
                "resolution": "1080p",
                "duration": 10,
                "aspect_ratio": "1:1",
                "generate_audio": True,
            },
        ),
        (
            "voice",
            VOICE,
            {
                "model": "kling-v3-text-to-video",
                "prompt": "<<<voice_1>>> says hello to <<<voice_2>>> on a park bench",
                "voice_ids": ["voice_123456", "voice_abcdef"],
                "resolution": "1080p",
                "duration": 5,
                "aspect_ratio": "16:9",
                "generate_audio": True,
            },
        ),
    ),
    refused=(
        (
            "cfg-and-shot-type",
            PLAIN_FULL,
            [
                "AIHubMax does not support cfg_scale.",
                "AIHubMax does not support choosing a shot type.",
            ],
        ),
        ("8s-multishot", MULTI, ["AIHubMax makes 5 or 10-second videos only (got 8)."]),
        (
            "7s",
            PLAIN.model_copy(update={"duration_s": 7}),
            ["AIHubMax makes 5 or 10-second videos only (got 7)."],
        ),
    ),
    create_ok=200,
    create_errors=(
        Reply(
            400,
            evo_error(400, "Invalid duration", "invalid_request_error"),
            ErrorKind.INVALID_INPUT,
            vendor_code="invalid_request_error",
        ),
        Reply(
            400,
            {
                "error": {
                    "code": "content_policy_violation",
                    "message": "Your request was blocked",
                    "type": "invalid_request_error",
                }
            },
            ErrorKind.CONTENT_POLICY,
            vendor_code="content_policy_violation",
        ),
        Reply(
            401,
            evo_error(401, "Invalid API key", "authentication_error"),
            ErrorKind.AUTH,
            vendor_code="authentication_error",
        ),
        Reply(
            402,
            evo_error(402, "Insufficient quota", "insufficient_quota_error"),
            ErrorKind.OUT_OF_FUNDS,
            vendor_code="insufficient_quota_error",
        ),
        Reply(
            403,
            evo_error(403, "Model access denied", "model_access_denied"),
            ErrorKind.AUTH,
            vendor_code="model_access_denied",
        ),
        Reply(
            422,
            evo_error(422, "resolution must be 720p, 1080p or 4k", "validation_error"),
            ErrorKind.INVALID_INPUT,
            vendor_code="validation_error",
        ),
        Reply(
            429,
            RATE_LIMIT_60,
            ErrorKind.RATE_LIMITED,
            retry_after_s=60,
            vendor_code="rate_limit_error",
        ),
        Reply(
            429,
            evo_error(429, "Rate limit exceeded, retry after 60 seconds", "rate_limit_error"),
            ErrorKind.RATE_LIMITED,
            {"Retry-After": "17"},
            retry_after_s=17,
            vendor_code="rate_limit_error",
        ),
        Reply(
            429,
            {"error": {"code": "insufficient_quota", "message": "You exceeded your quota"}},
            ErrorKind.OUT_OF_FUNDS,
            vendor_code="insufficient_quota",
        ),
        Reply(
            500,
            evo_error(500, "upstream failure", "upstream_error"),
            ErrorKind.TRANSIENT,
            vendor_code="upstream_error",
        ),
        Reply(503, "<html>Service Unavailable</html>", ErrorKind.TRANSIENT, vendor_code=None),
    ),
    malformed_creates=(
        *NOT_AN_OBJECT,
        b'{"id": "task-unified-17571',
        b'{"status": "pending"}',
    ),
    empty_account=empty_account,
    script={"queued": "pending", "succeeded": "completed"},
    polls=(
        {"state": ProviderState.QUEUED, "vendor_status": "pending", "progress_pct": 0},
        {"state": ProviderState.RUNNING, "vendor_status": "processing", "progress_pct": 45},
        {"state": ProviderState.SUCCEEDED, "vendor_status": "completed", "progress_pct": 100},
    ),
    poll_gets=lambda job_id: [(f"/v1/tasks/{job_id}", {})] * 3,
    unknown_job="task-unified-0-missing",
    script_poll=poll_error,
    poll_errors=(
        Reply(200, b"{not json", ErrorKind.UNKNOWN),
        Reply(200, b'{"id": "t", "status": "complet', ErrorKind.UNKNOWN),
        Reply(200, b"null", ErrorKind.UNKNOWN),
        Reply(200, {"id": "t", "status": "exploded"}, ErrorKind.UNKNOWN),
        Reply(429, RATE_LIMIT_60, ErrorKind.RATE_LIMITED, retry_after_s=60),
        Reply(502, "<html>Bad Gateway</html>", ErrorKind.TRANSIENT),
    ),
    failures=tuple(
        Failure(message, kind, vendor_code=code)
        for code, message, kind in [
            (
                "content_policy_violation",
                "Your request was blocked by safety filters",
                ErrorKind.CONTENT_POLICY,
            ),
            ("invalid_parameters", "duration must be 5 or 10", ErrorKind.INVALID_INPUT),
            ("insufficient_quota", "Not enough credits", ErrorKind.OUT_OF_FUNDS),
            ("quota_exceeded", "Request rate or quota exceeded", ErrorKind.RATE_LIMITED),
            ("rate_limited", "Too many requests", ErrorKind.RATE_LIMITED),
            ("service_error", "Internal service error", ErrorKind.TRANSIENT),
            ("upstream_error", "Upstream returned 502", ErrorKind.TRANSIENT),
            ("generation_timeout", "The task timed out", ErrorKind.TRANSIENT),
            ("resource_exhausted", "Upstream resources temporarily exhausted", ErrorKind.TRANSIENT),
            ("service_unavailable", "Try later", ErrorKind.TRANSIENT),
            ("channel_account_suspended", "channel problem", ErrorKind.TRANSIENT),
            ("resource_not_found", "task expired", ErrorKind.NOT_FOUND),
            ("generation_failed_no_content", "The model produced no content", ErrorKind.UNKNOWN),
            (
                "generation_failed_no_content",
                "Output blocked: NSFW detected",
                ErrorKind.CONTENT_POLICY,
            ),
            ("unknown_error", "Something broke", ErrorKind.UNKNOWN),
        ]
    ),
    fail_job=fail_job,
    failed_status="failed",
    status_body=lambda word: {
        "id": "t1",
        "status": word,
        "progress": 30,
        "results": [SAMPLE_VIDEO],
    },
    status_words=(
        ("pending", ProviderState.QUEUED),
        ("queued", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("running", ProviderState.RUNNING),
        ("completed", ProviderState.SUCCEEDED),
        ("succeeded", ProviderState.SUCCEEDED),
        ("Completed", ProviderState.SUCCEEDED),
        ("failed", ProviderState.FAILED),
        ("error", ProviderState.FAILED),
        ("cancelled", ProviderState.CANCELLED),
        ("canceled", ProviderState.CANCELLED),
    ),
    vendor_status=str.lower,
    status_fields=status_fields,
    no_video_statuses=tuple(
        (
            {"id": "t1", "status": "completed", "progress": 97, "results": results},
            {"progress_pct": 97, "vendor_status": "completed"},
        )
        for results in NOT_RESULTS
    ),
    progress_body=lambda value: {"id": "t1", "status": "processing", "progress": value},
    status_strategy=task_like | st.dictionaries(st.text(max_size=10), any_json, max_size=5),
    webhooks=Webhooks(
        send=send,
        flag=flag,
        bodies=st.binary(max_size=200)
        | task_like.map(encoded)
        | task_like.map(lambda v: encoded({"data": v})),
        headers=st.just({}),
        parsers=(parser,),
        garbage=(
            *NOT_JSON,
            b"null",
            b'{"id": "task-unified-1-abc", "status": "comp',
            b'{"status": "completed", "results": ["https://x/v.mp4"]}',
            b'{"id": "task-unified-1-abc"}',
            b'{"id": "task-unified-1-abc", "status": "teleported"}',
            b'{"id": ["task"], "status": "completed"}',
        ),
    ),
)

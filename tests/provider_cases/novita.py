"""Novita facts for the shared contract suite.

The wire format is documented in tests/provider_doubles/novita.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind
from bot.providers.http import ProviderHttp
from bot.providers.novita import NovitaProvider
from bot.settings import NovitaSettings
from tests.provider_cases.case import Failure, Reply, Route, Setup, VendorCase, Webhooks
from tests.provider_doubles.base import FakeJob, VendorDouble
from tests.provider_doubles.novita import API_KEY, NovitaDouble
from tests.provider_support import (
    MULTI,
    NO_HTTP,
    NOT_AN_OBJECT,
    NOT_JSON,
    PLAIN_FULL,
    SAMPLE_VIDEO,
    VOICE,
)
from tests.provider_support import json_values as any_json

HOOK = "https://bot.example/webhooks/novita/tok123"
CREATE_PATH = "/v3/async/kling-v3.0-pro-t2v"
FIRST_ID = "nv-task-000001"


def adapter(http: ProviderHttp, setup: Setup) -> NovitaProvider:
    settings = NovitaSettings(api_key=SecretStr(setup.key), base_url=setup.origin)
    return NovitaProvider(settings, http, now_s=setup.clock())


def parser() -> NovitaProvider:
    return NovitaProvider(NovitaSettings(), NO_HTTP)


def novita_error(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"code": status, "reason": reason, "message": message, "metadata": {}}


def poll_error(double: VendorDouble, reply: Reply) -> None:
    assert isinstance(double, NovitaDouble) and not reply.headers
    double.next_poll(reply.status, reply.body)


def fail_job(double: VendorDouble, job: FakeJob, failure: Failure) -> None:
    """The failure's reason is all a Novita task carries."""


async def send(double: VendorDouble, job: FakeJob, url: str, success: bool, variant: str) -> int:
    assert isinstance(double, NovitaDouble)
    return await double.send_webhook(job, url, success=success)


def flag(job: FakeJob) -> None:
    job.error = "content safety check failed: nudity"


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


task_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(
            ["TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED", "TASK_STATUS_QUEUED", "x"]
        )
        | any_json
    },
    optional={
        "task_id": any_json,
        "reason": any_json,
        "eta": any_json,
        "progress_percent": any_json,
        "err_detail": any_json,
    },
)
result_like = st.fixed_dictionaries(
    {"task": task_like | any_json},
    optional={"videos": any_json | st.lists(st.dictionaries(st.just("video_url"), any_json))},
)


def status_body(word: str) -> dict[str, Any]:
    return {
        "task": {"task_id": "t1", "status": word, "reason": "boom"},
        "videos": [{"video_url": SAMPLE_VIDEO, "video_url_ttl": "3600"}],
    }


CASE = VendorCase(
    name="novita",
    double_type=NovitaDouble,
    adapter=adapter,
    parser=parser,
    api_key=API_KEY,
    wrong_key="wrong",
    key_header=("Authorization", f"Bearer {API_KEY}"),
    hook=HOOK,
    routes=(Route("default", CREATE_PATH, FIRST_ID),),
    plain_body={
        "prompt": "A red fox running through snow",
        "duration": 5,
        "aspect_ratio": "16:9",
        "sound": True,
        "extra": {"webhook": {"url": HOOK}},
    },
    plain_job=lambda double: ProviderJob(FIRST_ID, {"endpoint": "kling-v3.0-pro-t2v"}),
    plain_status={"state": ProviderState.QUEUED},
    wire=(
        (
            # Novita has no shot type: the capability table refuses it, so the bot never sends it
            "supported-options",
            PLAIN_FULL.model_copy(update={"shot_type": None}),
            {
                "prompt": "A lighthouse at dusk, waves crashing",
                "negative_prompt": "blurry, watermark",
                "duration": 10,
                "aspect_ratio": "9:16",
                "sound": False,
                "cfg_scale": 0.7,
            },
        ),
        (
            "multishot",
            MULTI,
            {
                "multi_prompt": [
                    {"prompt": "A fox wakes up in its den", "duration": 3},
                    {"prompt": "The fox runs across a snowy field", "duration": 5},
                ],
                "duration": 8,
                "aspect_ratio": "1:1",
                "sound": True,
            },
        ),
    ),
    refused=(
        ("shot-type", PLAIN_FULL, ["Novita does not support choosing a shot type."]),
        ("voice-ids", VOICE, ["Novita does not support voice ids."]),
    ),
    create_ok=200,
    create_errors=(
        Reply(
            400,
            novita_error(400, "INVALID_REQUEST_BODY", "duration must be between 3 and 15"),
            ErrorKind.INVALID_INPUT,
            vendor_code="INVALID_REQUEST_BODY",
        ),
        Reply(
            400,
            novita_error(400, "INVALID_REQUEST_BODY", "prompt contains sensitive content"),
            ErrorKind.CONTENT_POLICY,
            vendor_code="INVALID_REQUEST_BODY",
        ),
        Reply(
            401,
            novita_error(401, "INVALID_API_KEY", "invalid api key"),
            ErrorKind.AUTH,
            vendor_code="INVALID_API_KEY",
        ),
        Reply(
            403,
            novita_error(403, "NOT_ENOUGH_BALANCE", "please recharge your account"),
            ErrorKind.OUT_OF_FUNDS,
            vendor_code="NOT_ENOUGH_BALANCE",
        ),
        Reply(
            403,
            novita_error(403, "PERMISSION_DENIED", "identity verification required"),
            ErrorKind.AUTH,
            vendor_code="PERMISSION_DENIED",
        ),
        Reply(
            429,
            novita_error(429, "RATE_LIMIT_EXCEEDED", "too many requests"),
            ErrorKind.RATE_LIMITED,
            {"Retry-After": "17"},
            retry_after_s=17,
            vendor_code="RATE_LIMIT_EXCEEDED",
        ),
        Reply(503, "<html>Service Unavailable</html>", ErrorKind.TRANSIENT, vendor_code=None),
        Reply(
            500,
            novita_error(500, "INTERNAL_ERROR", "internal error"),
            ErrorKind.TRANSIENT,
            vendor_code="INTERNAL_ERROR",
        ),
    ),
    malformed_creates=(
        *NOT_AN_OBJECT,
        b'{"task_id": "nv-1',
        b'{"task_id": ""}',
        b"{}",
    ),
    polls=(
        {
            "state": ProviderState.QUEUED,
            "vendor_status": "TASK_STATUS_QUEUED",
            "progress_pct": 0,
            "eta_s": 90.0,
        },
        {
            "state": ProviderState.RUNNING,
            "vendor_status": "TASK_STATUS_PROCESSING",
            "progress_pct": 40,
            "eta_s": 90.0,
        },
        {
            "state": ProviderState.SUCCEEDED,
            "vendor_status": "TASK_STATUS_SUCCEED",
            "progress_pct": 100,
        },
    ),
    poll_gets=lambda job_id: [("/v3/async/task-result", {"task_id": job_id})] * 3,
    unknown_job="nv-task-unknown",
    not_found_code="TASK_NOT_FOUND",
    script_poll=poll_error,
    poll_errors=(
        Reply(429, novita_error(429, "RATE_LIMIT_EXCEEDED", "slow down"), ErrorKind.RATE_LIMITED),
        Reply(503, {"message": "unavailable"}, ErrorKind.TRANSIENT),
        Reply(200, b"{not json", ErrorKind.UNKNOWN),
        Reply(200, b'{"task": {"task_id": "nv-1", "status": "TASK_STA', ErrorKind.UNKNOWN),
        Reply(200, b"[]", ErrorKind.UNKNOWN),
        Reply(200, b'{"task": "queued"}', ErrorKind.UNKNOWN),
        Reply(200, b'{"task": {"status": 7}}', ErrorKind.UNKNOWN),
    ),
    failures=(
        Failure("generation failed", ErrorKind.UNKNOWN),
        Failure("The prompt failed the content moderation check", ErrorKind.CONTENT_POLICY),
        Failure("sensitive content detected in the output video", ErrorKind.CONTENT_POLICY),
        Failure("invalid parameter: duration", ErrorKind.INVALID_INPUT),
        Failure("upstream server timeout", ErrorKind.TRANSIENT),
    ),
    fail_job=fail_job,
    failed_status="TASK_STATUS_FAILED",
    status_body=status_body,
    status_words=(
        ("TASK_STATUS_QUEUED", ProviderState.QUEUED),
        ("TASK_STATUS_PROCESSING", ProviderState.RUNNING),
        ("TASK_STATUS_SUCCEED", ProviderState.SUCCEEDED),
        ("TASK_STATUS_FAILED", ProviderState.FAILED),
        ("TASK_STATUS_CANCELED", ProviderState.CANCELLED),
        ("SUCCEED", ProviderState.SUCCEEDED),
        ("processing", ProviderState.RUNNING),
    ),
    status_error_detail="boom",
    unreadable_statuses=({"videos": []},),
    no_video_statuses=(
        (
            {"task": {"status": "TASK_STATUS_SUCCEED", "progress_percent": 100}, "videos": []},
            {"vendor_status": "TASK_STATUS_SUCCEED"},
        ),
    ),
    progress_body=lambda value: {
        "task": {"task_id": "t1", "status": "TASK_STATUS_PROCESSING", "progress_percent": value}
    },
    status_strategy=any_json | result_like,
    webhooks=Webhooks(
        send=send,
        flag=flag,
        bodies=st.binary(max_size=200)
        | any_json.map(encoded)
        | result_like.map(encoded)
        | st.fixed_dictionaries(
            {"event_type": st.just("ASYNC_TASK_RESULT") | any_json, "payload": result_like}
        ).map(encoded),
        headers=st.dictionaries(st.sampled_from(["Content-Type", "x"]), st.text(max_size=30)),
        parsers=(parser,),
        garbage=(
            *NOT_JSON,
            b"[]",
            b'{"event_type": "ASYNC_TASK_RESULT", "payload": "x"}',
            b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"status": "TASK_STATUS_SUCCEED"}}}',
            b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": "t", "status": "??"}}}',
            b'{"event_type": "SOMETHING_ELSE", "payload": {"task": {"task_id": "t", "status": "TASK_STATUS_QUEUED"}}}',
            b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": "t", "status": "TASK_ST',
        ),
    ),
)

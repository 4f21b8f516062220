"""Kling (official API, legacy surface) facts for the shared contract suite.

The wire format is documented in tests/provider_doubles/kling.py. Two things differ from the
other vendors:

- Every call carries a JWT made from the access key (the case's `api_key`) and the secret key,
  checked by the double against its own clock. The case runs adapter and double on one clock,
  fixed at NOW unless a test gives another (`Clock`), so every call carries the same token: the one
  the double's own code makes for Kling's claims at NOW (`key_header`).
- Callbacks are signed as Standard Webhooks when a webhook secret is set, and carry nothing but the
  URL token when not. The case's adapter and double share the secret `SECRET`; the unsigned mode is
  in tests/test_provider_kling.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import Headers as ReceivedHeaders
from bot.providers.base import ProviderJob, ProviderState, ProviderStatus, WebhookEvent
from bot.providers.errors import ErrorKind
from bot.providers.http import ProviderHttp
from bot.providers.kling import KlingProvider
from bot.settings import KlingSettings
from tests.provider_cases.case import (
    Failure,
    Reply,
    Route,
    Setup,
    Signer,
    Strictness,
    VendorCase,
    Webhooks,
)
from tests.provider_doubles.base import FakeJob, VendorDouble
from tests.provider_doubles.kling import (
    ACCESS_KEY,
    HTTP_OF_CODE,
    RISK_CONTROL,
    SECRET_KEY,
    KlingDouble,
    KlingJob,
    make_token,
)
from tests.provider_support import (
    MULTI,
    NO_HTTP,
    NOT_AN_OBJECT,
    NOT_JSON,
    NOW,
    PLAIN,
    PLAIN_FULL,
    SAMPLE_VIDEO,
    VOICE,
    id_text,
)
from tests.provider_support import json_values as any_json

HOOK = "https://bot.example/webhooks/kling/tok"
CREATE_PATH = "/v1/videos/text2video"
FIRST_ID = "867283741759111202"
SECRET = "whsec_a2xpbmctd2ViaG9vay1zZWNyZXQtZm9yLXRlc3Rz"  # the case's webhook secret
CLAIMS = {"iss": ACCESS_KEY, "exp": NOW + 1800, "nbf": NOW - 5}  # Kling's example token
DELIVERIES = ("msg_1", "msg_2")  # the webhook-id of the double's deliveries: (success, failure)


class Clock:
    """A clock set by hand, shared by an adapter and the double (the JWT's times must agree)."""

    def __init__(self, now_s: float = NOW) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def new_double() -> KlingDouble:
    """The double on its own clock at NOW, signing callbacks with SECRET."""
    double = KlingDouble()
    double.clock = Clock()
    double.webhook_secret = SECRET
    return double


def adapter(
    http: ProviderHttp,
    setup: Setup,
    *,
    clock: Clock | None = None,
    secret_key: str = SECRET_KEY,
    webhook_secret: str | None = SECRET,
) -> KlingProvider:
    """The adapter on `clock` (by default the setup's fixed time, or NOW as the double has)."""
    settings = KlingSettings(
        access_key=SecretStr(setup.key),
        secret_key=SecretStr(secret_key),
        base_url=setup.origin,
        webhook_secret=SecretStr(webhook_secret) if webhook_secret else None,
    )
    now_s = clock or Clock(NOW if setup.now_s is None else setup.now_s)
    return KlingProvider(settings, http, now_s=now_s)


def verifier(secret: str | None = None, *, now_s: float = NOW) -> KlingProvider:
    """An adapter that only parses; with `secret`, callbacks must be signed with it."""
    settings = KlingSettings(webhook_secret=SecretStr(secret) if secret else None)
    return KlingProvider(settings, NO_HTTP, now_s=lambda: now_s)


@dataclass(frozen=True)
class KlingParser:
    """A Kling adapter as the suite reads outside input with: its status reader is `parse_task`."""

    provider: KlingProvider

    def parse_status(self, data: dict[str, Any]) -> ProviderStatus:
        return self.provider.parse_task(data)

    def parse_webhook(self, headers: ReceivedHeaders, body: bytes) -> WebhookEvent:
        return self.provider.parse_webhook(headers, body)


def parser(secret: str | None = None) -> KlingParser:
    return KlingParser(verifier(secret))


def envelope(code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A Kling reply: {code, message, request_id[, data]}."""
    body: dict[str, Any] = {"code": code, "message": message, "request_id": "req-1"}
    if data is not None:
        body["data"] = data
    return body


def business(
    code: int,
    kind: ErrorKind,
    *,
    status: int | None = None,
    headers: dict[str, str] | None = None,
    retry_after_s: float | None = None,
) -> Reply:
    """Business `code` with the HTTP status of the official table (or `status`)."""
    message = f"message for {code}"
    return Reply(
        status or HTTP_OF_CODE.get(code, 400),
        envelope(code, message),
        kind,
        headers or {},
        retry_after_s=retry_after_s,
        vendor_code=str(code),
        detail_has=f"code {code}: {message}",
    )


# Section 1.8 of the reference, code by code; a code with a rate limit waits at least BACKOFF_S
BUSINESS_CODES = (
    *(business(code, ErrorKind.AUTH) for code in (1000, 1001, 1002, 1003, 1004)),
    business(1100, ErrorKind.AUTH),  # account exception: an admin must look
    business(1101, ErrorKind.OUT_OF_FUNDS),  # a 429 that is no rate limit: fail over
    business(1102, ErrorKind.OUT_OF_FUNDS),
    business(1103, ErrorKind.AUTH),
    *(business(code, ErrorKind.INVALID_INPUT) for code in (1200, 1201, 1202, 1203)),
    business(1300, ErrorKind.CONTENT_POLICY),
    business(1301, ErrorKind.CONTENT_POLICY),
    business(1301, ErrorKind.CONTENT_POLICY, status=200),  # a non-zero code is an error anyway
    business(1302, ErrorKind.RATE_LIMITED, retry_after_s=1.0),
    business(1302, ErrorKind.RATE_LIMITED, headers={"Retry-After": "7"}, retry_after_s=7.0),
    business(1303, ErrorKind.RATE_LIMITED, retry_after_s=1.0),
    business(1304, ErrorKind.AUTH),
    business(5000, ErrorKind.TRANSIENT),
    business(5001, ErrorKind.TRANSIENT, headers={"Retry-After": "30"}, retry_after_s=30.0),
    business(1299, ErrorKind.INVALID_INPUT),  # a code not in the table: the HTTP status decides
    business(9999, ErrorKind.UNKNOWN, status=200),
)


def poll_error(double: VendorDouble, reply: Reply) -> None:
    assert isinstance(double, KlingDouble) and not reply.headers
    double.next_poll(reply.status, reply.body)


def fail_job(double: VendorDouble, job: FakeJob, failure: Failure) -> None:
    """The failure's message (`task_status_msg`) is all a Kling task carries."""


async def send(double: VendorDouble, job: FakeJob, url: str, success: bool, variant: str) -> int:
    """The flat legacy task (the official page) or the same wrapped in {code, data} (a summary)."""
    assert isinstance(double, KlingDouble) and isinstance(job, KlingJob)
    state = "succeeded" if success else "failed"
    body = double.callback_body(job, state)
    if variant == "wrapped":
        body = json.dumps(envelope(0, "SUCCEED", json.loads(body))).encode()
    return await double.send_callback(job, url, msg_id=DELIVERIES[not success], body=body)


def flag(job: FakeJob) -> None:
    job.error = RISK_CONTROL


def sign(
    body: bytes, *, ts: int = NOW, ref: str = DELIVERIES[0], wrong_key: bool = False
) -> dict[str, str]:
    """Standard Webhooks headers; `ref` is the delivery (webhook) id."""
    return KlingDouble.sign("whsec_" + "QUJD" * 8 if wrong_key else SECRET, body, ref, ts)


def sample(job_id: str) -> bytes:
    videos = [{"id": "v1", "url": SAMPLE_VIDEO, "duration": "5.1"}]
    task = {"task_id": job_id, "task_status": "succeed", "task_result": {"videos": videos}}
    return json.dumps(task).encode()


def expected_event(data: dict[str, Any], ref: str) -> tuple[str | None, str | None]:
    """The task (flat or in `data`) names the job by task_id, else id; the header the delivery."""
    task = data["data"] if isinstance(data.get("data"), dict) else data
    return id_text(task.get("task_id")) or id_text(task.get("id")), ref


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


def status_body(word: str) -> dict[str, Any]:
    return {
        "task_id": "t1",
        "task_status": word,
        "task_status_msg": "boom",
        "task_result": {"videos": [{"id": "v1", "url": SAMPLE_VIDEO, "duration": "5.1"}]},
    }


WORDS = ["submitted", "processing", "succeed", "succeeded", "failed", "x"]
videos = any_json | st.lists(st.fixed_dictionaries({"url": any_json | st.just(SAMPLE_VIDEO)}))
task_like = st.fixed_dictionaries(
    {"task_status": st.sampled_from(WORDS) | any_json},
    optional={
        "task_id": any_json,
        "id": any_json,
        "task_status_msg": any_json | st.sampled_from([RISK_CONTROL, "风控", "server timeout"]),
        "task_result": any_json | st.fixed_dictionaries({"videos": videos}),
        "status": st.sampled_from(WORDS) | any_json,
        "outputs": videos,
        "message": any_json,
    },
)
NO_VIDEO_RESULTS: tuple[Any, ...] = (
    None,
    {},
    {"videos": []},
    {"videos": [{"id": "v1", "url": ""}]},
    {"videos": [{"id": "v1", "url": "ftp://cdn.example/v.mp4"}]},
)
SUCCEED = {"vendor_status": "succeed"}
FULL = PLAIN_FULL.model_copy(update={"cfg_scale": None})  # Kling v3 takes no cfg_scale
INTELLIGENT = PLAIN.model_copy(update={"shot_type": "intelligent", "resolution": "720p"})

CASE = VendorCase(
    name="kling",
    double_type=new_double,
    adapter=adapter,
    parser=parser,
    api_key=ACCESS_KEY,
    wrong_key="AKnotthisaccount",
    key_header=("Authorization", f"Bearer {make_token(CLAIMS)}"),
    hook=HOOK,
    routes=(Route("default", CREATE_PATH, FIRST_ID),),
    plain_body={  # the duration as a string, audio as `sound`, 1080p as mode pro
        "model_name": "kling-v3",
        "mode": "pro",
        "duration": "5",
        "sound": "on",
        "prompt": "A red fox running through snow",
        "aspect_ratio": "16:9",
        "callback_url": HOOK,
    },
    plain_job=lambda double: ProviderJob(FIRST_ID, {"kind": "text2video"}),
    plain_status={"state": ProviderState.QUEUED, "vendor_status": "submitted"},
    wire=(
        (
            "full",
            FULL,
            {
                "model_name": "kling-v3",
                "mode": "pro",
                "duration": "10",
                "sound": "off",
                "prompt": "A lighthouse at dusk, waves crashing",
                "negative_prompt": "blurry, watermark",
                "aspect_ratio": "9:16",
            },
        ),
        (
            "multishot",
            MULTI,
            {
                "model_name": "kling-v3",
                "mode": "pro",
                "duration": "8",
                "sound": "on",
                "multi_shot": True,
                "shot_type": "customize",
                "multi_prompt": [  # indexes from 1, durations as strings
                    {"index": 1, "prompt": "A fox wakes up in its den", "duration": "3"},
                    {"index": 2, "prompt": "The fox runs across a snowy field", "duration": "5"},
                ],
                "aspect_ratio": "1:1",
            },
        ),
        (
            "voice",
            VOICE,
            {
                "model_name": "kling-v3",
                "mode": "pro",
                "duration": "5",
                "sound": "on",  # voices need sound on
                "prompt": "<<<voice_1>>> says hello to <<<voice_2>>> on a park bench",
                "voice_list": [{"voice_id": "voice_123456"}, {"voice_id": "voice_abcdef"}],
                "aspect_ratio": "16:9",
            },
        ),
        (
            "intelligent-720p",
            INTELLIGENT,
            {
                "model_name": "kling-v3",
                "mode": "std",  # 720p
                "duration": "5",
                "sound": "on",
                "prompt": "A red fox running through snow",
                "multi_shot": True,
                "shot_type": "intelligence",  # Kling's word for the canonical "intelligent"
                "aspect_ratio": "16:9",
            },
        ),
    ),
    refused=(
        (
            "cfg-scale",
            PLAIN.model_copy(update={"cfg_scale": 0.5}),
            ["Kling does not support cfg_scale."],
        ),
        (
            "4k",
            PLAIN.model_copy(update={"resolution": "4k"}),
            ["Kling renders 1080p, 720p only (got 4k)."],
        ),
    ),
    create_ok=200,
    create_errors=(
        *BUSINESS_CODES,
        Reply(401, {"message": "Unauthorized"}, ErrorKind.AUTH, vendor_code=None),
        Reply(503, b"<html>Service Unavailable</html>", ErrorKind.TRANSIENT, vendor_code=None),
    ),
    malformed_creates=(
        *NOT_AN_OBJECT,
        b'{"code": 0, "message": "SUCCEED", "data": {"task_id": "8672',
        envelope(0, "SUCCEED", {"task_status": "submitted"}),  # no task_id
        envelope(0, "SUCCEED", {"task_id": "  ", "task_status": "submitted"}),
        envelope(0, "SUCCEED"),  # no data
        b'{"message": "SUCCEED", "data": {"task_id": "1"}}',  # no code: made or not, unknown
        b'{"code": "ok", "message": "SUCCEED", "data": {"task_id": "1"}}',
    ),
    polls=(
        {"state": ProviderState.QUEUED, "vendor_status": "submitted", "progress_pct": None},
        {"state": ProviderState.RUNNING, "vendor_status": "processing", "progress_pct": None},
        {"state": ProviderState.SUCCEEDED, "vendor_status": "succeed", "progress_pct": 100},
    ),
    poll_gets=lambda job_id: [(f"{CREATE_PATH}/{job_id}", {})] * 3,
    unknown_job="42",
    not_found_code="1203",
    script_poll=poll_error,
    poll_errors=(
        # 1202/1203 on a query: the task (or its kind) is unknown, not the create's bad input
        Reply(404, envelope(1202, "unknown API"), ErrorKind.NOT_FOUND),
        Reply(404, envelope(1203, "task not found"), ErrorKind.NOT_FOUND),
        Reply(429, envelope(1302, "request too fast"), ErrorKind.RATE_LIMITED, retry_after_s=1.0),
        Reply(503, envelope(5001, "under maintenance"), ErrorKind.TRANSIENT),
        Reply(401, envelope(1004, "Authorization has expired"), ErrorKind.AUTH),
        Reply(502, b"<html>Bad Gateway</html>", ErrorKind.TRANSIENT),
        Reply(200, b"{not json", ErrorKind.UNKNOWN),
        Reply(200, envelope(0, "SUCCEED"), ErrorKind.UNKNOWN),  # no data
        Reply(200, envelope(0, "SUCCEED", ["not", "a", "task"]), ErrorKind.UNKNOWN),
        Reply(200, envelope(0, "SUCCEED", {"task_status": "teleported"}), ErrorKind.UNKNOWN),
    ),
    failures=tuple(
        Failure(message, kind, vendor_code=None, status_code=None)
        for message, kind in [
            (RISK_CONTROL, ErrorKind.CONTENT_POLICY),
            ("Content security risk detected in the output", ErrorKind.CONTENT_POLICY),
            ("触发风控，审核未通过", ErrorKind.CONTENT_POLICY),
            ("internal server timeout", ErrorKind.TRANSIENT),
            ("generation failed", ErrorKind.UNKNOWN),
        ]
    ),
    fail_job=fail_job,
    failed_status="failed",
    status_body=status_body,
    status_words=(
        ("submitted", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("succeed", ProviderState.SUCCEEDED),
        ("succeeded", ProviderState.SUCCEEDED),  # the new surface's spelling
        ("SUCCEED", ProviderState.SUCCEEDED),
        ("failed", ProviderState.FAILED),
    ),
    status_fields=lambda word, state: {
        "progress_pct": 100 if state is ProviderState.SUCCEEDED else None
    },
    status_error_detail="boom",
    unreadable_statuses=(
        {},
        {"task_id": "t1"},
        {"task_status": None},
        {"task_status": ["succeed"]},
        {"task_status": ""},
    ),
    no_video_statuses=tuple(  # finished without a link yet: keep polling
        ({"task_id": "t1", "task_status": "succeed", "task_result": result}, SUCCEED)
        for result in NO_VIDEO_RESULTS
    ),
    status_strategy=any_json | task_like,
    strictness=Strictness(
        good={"model_name": "kling-v3", "prompt": "a cat", "duration": "5"},
        accepted=200,
        refused=400,
        bad=(
            {"model_name": "kling-v3", "prompt": "a cat", "duration": 5},
            {"model_name": "kling-v3", "prompt": "a cat", "cfg_scale": 0.5},
            {"model_name": "kling-v3", "prompt": "a cat", "sound": True},
            {"model_name": "kling-v3", "prompt": "a cat", "mode": "1080p"},
            {"model_name": "kling-v3", "prompt": "a cat", "voice_list": [{"voice_id": "v"}]},
            {"model_name": "kling-v3", "prompt": "a cat", "multi_shot": True, "shot_type": "x"},
            {"model_name": "kling-v3", "multi_shot": True, "shot_type": "customize"},
            {
                "model_name": "kling-v3",
                "multi_shot": True,
                "shot_type": "customize",
                "multi_prompt": [{"index": 1, "prompt": "x", "duration": 5}],
                "duration": "5",
            },
            {"model_name": "kling-v3", "prompt": "a cat", "image": "abc"},
            {"model_name": "kling-v3", "duration": "5"},
            {"model_name": "kling-v3-omni", "prompt": "a cat"},
        ),
        refusal=lambda reply: reply["code"] == 1201,
        foreign_auth={"Authorization": f"Bearer {ACCESS_KEY}"},  # the new surface's plain key
    ),
    webhooks=Webhooks(
        send=send,
        flag=flag,
        variants=("flat", "wrapped"),
        delivery_ids=DELIVERIES,
        failure_fields={"detail": RISK_CONTROL, "vendor_code": None},
        bodies=st.binary(max_size=200)
        | any_json.map(encoded)
        | task_like.map(encoded)
        | task_like.map(lambda task: encoded(envelope(0, "SUCCEED", task))),
        headers=st.dictionaries(
            st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]),
            st.text(max_size=30) | st.just(str(NOW)),
        ),
        parsers=(parser, lambda: parser(SECRET), lambda: parser("whsec_not-base64!")),
        garbage=(
            *NOT_JSON,
            b"[]",
            b'{"task_status": "succeed"}',
            b'{"task_id": "1", "task_status": "x"}',
            b'{"task_id": "  ", "task_status": "succeed"}',
            b'{"code": 0, "data": {"task_status": "processing"}}',
        ),
        signer=Signer(
            parser=lambda: parser(SECRET),
            sign=sign,
            sample=sample,
            signature_header="webhook-signature",
            timestamp_header="webhook-timestamp",
            garbage_signature="v1,AAAA",
            expected_event=expected_event,
        ),
    ),
)

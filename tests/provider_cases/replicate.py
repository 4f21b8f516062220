"""Replicate facts for the shared contract suite.

The wire format is documented in tests/provider_doubles/replicate.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind
from bot.providers.http import ProviderHttp
from bot.providers.replicate import ReplicateProvider
from bot.settings import ReplicateSettings
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
from tests.provider_doubles.replicate import API_TOKEN, SENSITIVE, ReplicateDouble, ReplicateJob
from tests.provider_support import (
    NO_HTTP,
    NOT_AN_OBJECT,
    NOW,
    PLAIN,
    PLAIN_FULL,
    SAMPLE_VIDEO,
    VOICE,
    id_text,
)
from tests.provider_support import json_values as any_json

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FIRST_ID = "kv3aaaaaaaaaaaaaaaaaaaaaab"
CREATE_PATH = "/v1/models/kwaivgi/kling-v3-video/predictions"
HOOK = "https://bot.example/wh/replicate"
PLAIN_FULL_SUPPORTED = PLAIN_FULL.model_copy(update={"cfg_scale": None, "shot_type": None})


def adapter(http: ProviderHttp, setup: Setup, *, secret: str | None = None) -> ReplicateProvider:
    settings = ReplicateSettings(
        api_key=SecretStr(setup.key),
        base_url=f"{setup.origin}/v1",
        webhook_secret=SecretStr(secret) if secret else None,
    )
    return ReplicateProvider(settings, http, now_s=setup.clock())


def parser(secret: str | None = None) -> ReplicateProvider:
    """An adapter that only parses; with `secret`, webhooks must be signed with it (at NOW)."""
    settings = ReplicateSettings(webhook_secret=SecretStr(secret) if secret else None)
    return ReplicateProvider(settings, NO_HTTP, now_s=lambda: NOW)


def sign(
    body: bytes, *, ts: int = NOW, ref: str = "msg_1", wrong_key: bool = False
) -> dict[str, str]:
    """Standard Webhooks headers; `ref` is the delivery (message) id."""
    return ReplicateDouble.sign("whsec_" + "QUJD" * 8 if wrong_key else SECRET, body, ref, ts)


def sample(job_id: str) -> bytes:
    return json.dumps({"id": job_id, "status": "succeeded", "output": SAMPLE_VIDEO}).encode()


def header_set(name: str, value: str | None) -> Any:
    def mutate(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        changed = {k: v for k, v in headers.items() if k != name}
        if value is not None:
            changed[name] = value
        return body, changed

    return mutate


def v2_scheme(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    signature = headers["webhook-signature"].replace("v1,", "v2,")
    return body, {**headers, "webhook-signature": signature}


def expected_event(data: dict[str, Any], ref: str) -> tuple[str | None, str | None]:
    return id_text(data.get("id")), ref


def secret_fetch(provider: object) -> object:
    assert isinstance(provider, ReplicateProvider)
    return provider.secret_fetch


def sign_as_double(double: VendorDouble, body: bytes, ref: str) -> dict[str, str]:
    assert isinstance(double, ReplicateDouble)
    return ReplicateDouble.sign(double.webhook_secret, body, ref, NOW)


def fail_job(double: VendorDouble, job: FakeJob, failure: Failure) -> None:
    """The failure's word and message are all a prediction carries."""


async def send(double: VendorDouble, job: FakeJob, url: str, success: bool, variant: str) -> int:
    assert isinstance(double, ReplicateDouble) and isinstance(job, ReplicateJob)
    return await double.send_webhook(job, url, success=success, msg_id=DELIVERIES[not success])


def flag(job: FakeJob) -> None:
    job.error = SENSITIVE


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


DELIVERIES = ("msg_1", "msg_2")  # the delivery ids the double sends: (success, failure)
status_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["starting", "processing", "succeeded", "failed", "aborted", "x"])
        | any_json
    },
    optional={
        "id": any_json,
        "output": any_json,
        "error": any_json | st.sampled_from([SENSITIVE, "E1001", "(E99999)"]),
        "logs": any_json | st.sampled_from(["50%|█████", "100%|", "999%|"]),
        "data_removed": any_json,
    },
)

CASE = VendorCase(
    name="replicate",
    double_type=ReplicateDouble,
    adapter=adapter,
    parser=parser,
    api_key=API_TOKEN,
    wrong_key="r8_wrong",
    key_header=("Authorization", f"Bearer {API_TOKEN}"),
    hook=HOOK,
    routes=(Route("default", CREATE_PATH, FIRST_ID),),
    plain_body={
        "input": {
            "prompt": "A red fox running through snow",
            "mode": "pro",
            "duration": 5,
            "aspect_ratio": "16:9",
            "generate_audio": True,
        },
        "webhook": HOOK,
        "webhook_events_filter": ["completed"],
    },
    plain_job=lambda double: ProviderJob(FIRST_ID),
    plain_status={"state": ProviderState.QUEUED, "vendor_status": "starting"},
    wire=(
        (
            "supported-options",
            PLAIN_FULL_SUPPORTED,
            {
                "input": {
                    "prompt": "A lighthouse at dusk, waves crashing",
                    "negative_prompt": "blurry, watermark",
                    "mode": "pro",
                    "duration": 10,
                    "aspect_ratio": "9:16",
                    "generate_audio": False,
                }
            },
        ),
    ),
    refused=(
        (
            "cfg-and-shot-type",
            PLAIN_FULL,
            [
                "Replicate does not support cfg_scale.",
                "Replicate does not support choosing a shot type.",
            ],
        ),
        ("voice-ids", VOICE, ["Replicate does not support voice ids."]),
        (
            "4k",
            PLAIN.model_copy(update={"resolution": "4k"}),
            ["Replicate renders 1080p, 720p only (got 4k)."],
        ),
    ),
    create_ok=201,
    create_errors=(
        Reply(
            401,
            {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token"},
            ErrorKind.AUTH,
        ),
        Reply(
            402,
            {
                "title": "Insufficient credit",
                "detail": "You have insufficient credit to run this model. Go to "
                "https://replicate.com/account/billing#billing to purchase credit.",
                "status": 402,
            },
            ErrorKind.OUT_OF_FUNDS,
        ),
        Reply(
            422,
            {"title": "Input validation failed", "detail": "- input.duration: Must be ≤ 15\n"},
            ErrorKind.INVALID_INPUT,
        ),
        Reply(
            422,
            {"title": "Input validation failed", "detail": "The prompt was flagged as sensitive"},
            ErrorKind.CONTENT_POLICY,
        ),
        Reply(
            429,
            {"detail": "Request was throttled. Your rate limit resets in ~30s.", "status": 429},
            ErrorKind.RATE_LIMITED,
            retry_after_s=30,
        ),
        Reply(
            429,
            {"detail": "Request was throttled.", "status": 429},
            ErrorKind.RATE_LIMITED,
            {"Retry-After": "17"},
            retry_after_s=17,
        ),
        Reply(500, {"title": "Internal server error", "status": 500}, ErrorKind.TRANSIENT),
        Reply(503, "<html>Service Unavailable</html>", ErrorKind.TRANSIENT),
    ),
    malformed_creates=(
        *NOT_AN_OBJECT,
        b'{"id": "kv3aaaa',
        b'{"status": "starting"}',
    ),
    polls=(  # progress is read from the logs' progress bar
        {"state": ProviderState.QUEUED, "vendor_status": "starting", "progress_pct": None},
        {"state": ProviderState.RUNNING, "vendor_status": "processing", "progress_pct": 60},
        {"state": ProviderState.RUNNING, "vendor_status": "processing", "progress_pct": 90},
        {"state": ProviderState.SUCCEEDED, "vendor_status": "succeeded", "progress_pct": 100},
    ),
    poll_gets=lambda job_id: [(f"/v1/predictions/{job_id}", {})] * 4,
    unknown_job="nosuchprediction",
    failures=tuple(
        Failure(message, kind, vendor_code=code, word=word, vendor_status=word)
        for word, message, code, kind in [
            ("failed", SENSITIVE, "E005", ErrorKind.CONTENT_POLICY),
            ("failed", "Prediction failed: out of memory (E1001)", "E1001", ErrorKind.TRANSIENT),
            ("failed", "E6716: Timeout starting prediction", "E6716", ErrorKind.TRANSIENT),
            ("failed", "E1000: unknown error", "E1000", ErrorKind.UNKNOWN),
            ("failed", "Kling refused: content risk control", None, ErrorKind.CONTENT_POLICY),
            ("failed", "Kling API returned an odd reply", None, ErrorKind.UNKNOWN),
            ("aborted", "", None, ErrorKind.TRANSIENT),
        ]
    ),
    fail_job=fail_job,
    failed_status="failed",
    exact_failure_detail=False,
    status_body=lambda word: {"status": word, "output": SAMPLE_VIDEO, "error": None},
    status_words=(
        ("starting", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("succeeded", ProviderState.SUCCEEDED),
        ("failed", ProviderState.FAILED),
        ("aborted", ProviderState.FAILED),
        ("canceled", ProviderState.CANCELLED),
        ("cancelled", ProviderState.CANCELLED),
    ),
    status_strategy=any_json | status_like,
    strictness=Strictness(
        good={"input": {"prompt": "a cat", "duration": 5, "mode": "pro"}},
        accepted=201,
        bad=(
            {"input": {"prompt": "a cat", "duration": "5"}},
            {"input": {"prompt": "a cat", "cfg_scale": 0.5}},
            {"input": {"prompt": "a cat", "voice_ids": ["v"]}},
            {"input": {"prompt": "a cat", "mode": "1080p"}},
            {"input": {"duration": 5, "multi_prompt": [{"prompt": "x", "duration": 5}]}},
            {"input": {"duration": 5, "multi_prompt": '[{"prompt": "x", "duration": "5"}]'}},
            {"input": {"duration": 8, "multi_prompt": '[{"prompt": "x", "duration": 5}]'}},
            {"input": {"prompt": "a cat"}, "webhook_events_filter": ["done"]},
            {"prompt": "a cat"},
        ),
        refusal=lambda reply: reply["title"] == "Input validation failed",
        foreign_auth={"Authorization": "Token x"},
    ),
    cancel_call=lambda job_id: ("POST", f"/v1/predictions/{job_id}/cancel"),
    webhooks=Webhooks(
        send=send,
        flag=flag,
        delivery_ids=DELIVERIES,
        bodies=st.binary(max_size=200) | any_json.map(encoded) | status_like.map(encoded),
        headers=st.dictionaries(
            st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]),
            st.text(max_size=30) | st.just(str(NOW)),
        ),
        parsers=(parser, lambda: parser(SECRET), lambda: parser("not-base64!")),
        garbage=(b"{oops", b"[1]", b'{"id": "p1", "status": "done"}'),
        signer=Signer(
            parser=lambda: parser(SECRET),
            sign=sign,
            sample=sample,
            signature_header="webhook-signature",
            timestamp_header="webhook-timestamp",
            garbage_signature="v1,AAAA",
            forgeries={
                "other_id": header_set("webhook-id", "msg_2"),
                "no_id": header_set("webhook-id", None),
                "v2_scheme": v2_scheme,
            },
            expected_event=expected_event,
            background=secret_fetch,
            sign_as_double=sign_as_double,
        ),
    ),
)

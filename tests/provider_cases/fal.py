"""fal.ai facts for the shared contract suite.

The wire format is documented in tests/provider_doubles/fal.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind
from bot.providers.fal import FalProvider
from bot.providers.http import ProviderHttp
from bot.providers.signing import FalKeys
from bot.settings import FalSettings
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
from tests.provider_doubles.fal import API_KEY, CONTENT_CHECKER, FalDouble, FalJob, public_jwk
from tests.provider_support import (
    KLING_FULL,
    KLING_MULTI,
    KLING_PLAIN,
    KLING_VOICE,
    MULTI,
    NO_HTTP,
    NOT_AN_OBJECT,
    NOW,
    PLAIN_FULL,
    SAMPLE_VIDEO,
    VOICE,
    id_text,
)
from tests.provider_support import json_values as any_json

FIRST_ID = "00000000-0000-4000-8000-000000000001"
MODEL_PATH = "/fal-ai/kling-video/v3/pro/text-to-video"
HOOK = "https://bot.example/webhooks/fal?t=1"


def adapter(http: ProviderHttp, setup: Setup, *, keys_ttl_s: float = 24 * 3600) -> FalProvider:
    settings = FalSettings(
        api_key=SecretStr(setup.key),
        base_url=setup.origin,
        jwks_url=f"{setup.origin}/.well-known/jwks.json",
    )
    return FalProvider(settings, http, now_s=setup.clock(), keys_ttl_s=keys_ttl_s)


def parser() -> FalProvider:
    return FalProvider(FalSettings(), NO_HTTP)


def loaded_keys(fal_double: FalDouble, **kwargs: Any) -> FalKeys:
    """FalKeys holding the double's published keys, fetched without a network."""

    async def fetch() -> object:
        return {"keys": [public_jwk(k, "k") for k in fal_double.published_keys]}

    keys = FalKeys(fetch, **kwargs)
    asyncio.run(keys.refresh())
    return keys


SIGNING_DOUBLE = FalDouble()  # never started: only its keys are used
SIGNING_KEYS = loaded_keys(SIGNING_DOUBLE)


def verifier() -> FalProvider:
    """An adapter that knows the signing double's keys and whose clock says NOW."""
    return FalProvider(FalSettings(), NO_HTTP, keys=SIGNING_KEYS, now_s=lambda: NOW)


def sign(body: bytes, *, ts: int = NOW, ref: str = "p1", wrong_key: bool = False) -> dict[str, str]:
    key = Ed25519PrivateKey.generate() if wrong_key else None
    return SIGNING_DOUBLE.sign(body, ref, ts, key=key)


def sample(job_id: str) -> bytes:
    payload = {"video": {"url": SAMPLE_VIDEO}}
    return json.dumps({"request_id": job_id, "status": "OK", "payload": payload}).encode()


def forged(name: str, value: str | None) -> Any:
    """A forgery that sets (or, with None, removes) one signature header."""

    def mutate(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        changed = dict(headers)
        if value is None:
            changed.pop(f"X-Fal-Webhook-{name}")
        else:
            changed[f"X-Fal-Webhook-{name}"] = value
        return body, changed

    return mutate


def short_signature(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    signature = headers["X-Fal-Webhook-Signature"]
    return body, {**headers, "X-Fal-Webhook-Signature": signature[:64]}


def expected_event(data: dict[str, Any], ref: str) -> tuple[str | None, str | None]:
    """fal's body names the request; without it the signed header does."""
    return id_text(data.get("request_id")) or ref, None


def key_refresh(provider: object) -> object:
    assert isinstance(provider, FalProvider)
    return provider.key_refresh


def sign_as_double(double: VendorDouble, body: bytes, ref: str) -> dict[str, str]:
    assert isinstance(double, FalDouble)
    return double.sign(body, ref, NOW)


def plain_job(double: VendorDouble) -> ProviderJob:
    """The first job, with the status, result and cancel URLs fal returned."""
    assert isinstance(double, FalDouble)
    return ProviderJob(FIRST_ID, double.urls(FIRST_ID))


def fail_job(double: VendorDouble, job: FakeJob, failure: Failure) -> None:
    assert isinstance(job, FalJob)
    assert isinstance(failure.status_code, int) and isinstance(failure.vendor_code, str)
    job.error_status, job.error_type = failure.status_code, failure.vendor_code
    job.retryable = failure.knobs.get("retryable")


async def send(double: VendorDouble, job: FakeJob, url: str, success: bool, variant: str) -> int:
    assert isinstance(double, FalDouble) and isinstance(job, FalJob)
    return await double.send_webhook(job, url, success=success)


def flag(job: FakeJob) -> None:
    assert isinstance(job, FalJob)
    job.error_status, job.error_type, job.error = 422, "content_policy_violation", CONTENT_CHECKER


def status_body(word: str) -> dict[str, Any]:
    extra: dict[str, dict[str, Any]] = {
        "IN_QUEUE": {"queue_position": 3},
        "IN_PROGRESS": {"logs": [{"message": "x"}]},
        "COMPLETED": {"logs": None},  # the result is not fetched yet
        "FAILED": {"error": "runner crashed"},
    }
    return {"status": word, **extra.get(word, {})}


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


status_like = st.fixed_dictionaries(
    {"status": st.sampled_from(["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "x"]) | any_json},
    optional={"queue_position": any_json, "error": any_json, "error_type": any_json},
)
webhook_like = st.fixed_dictionaries(
    {"status": st.sampled_from(["OK", "ERROR", "ok"]) | any_json},
    optional={
        "request_id": any_json,
        "payload": any_json
        | st.fixed_dictionaries({"video": any_json})
        | st.fixed_dictionaries({"detail": any_json}),
        "error": any_json | st.sampled_from(["Invalid status code: 422", "status 503"]),
        "error_type": any_json,
        "payload_error": any_json,
    },
)
WEBHOOK_HEADERS = ["Request-Id", "User-Id", "Timestamp", "Signature"]

CASE = VendorCase(
    name="fal",
    double_type=FalDouble,
    adapter=adapter,
    parser=parser,
    api_key=API_KEY,
    wrong_key="wrong:key",
    key_header=("Authorization", f"Key {API_KEY}"),
    hook=HOOK,
    routes=(Route("default", MODEL_PATH, FIRST_ID),),
    plain_body=KLING_PLAIN,
    plain_query={"fal_webhook": HOOK},
    plain_job=plain_job,
    plain_status={"state": ProviderState.QUEUED, "queue_position": 1},
    wire=(
        ("full", PLAIN_FULL, KLING_FULL),
        ("multishot", MULTI, KLING_MULTI),
        ("voice", VOICE, KLING_VOICE),
    ),
    create_ok=200,
    create_errors=(
        Reply(401, {"detail": "No user found for Key ID and Secret"}, ErrorKind.AUTH),
        Reply(403, {"detail": "Forbidden: key lacks permission"}, ErrorKind.AUTH),
        Reply(
            403,
            {"detail": "User is locked. Reason: Exhausted balance. Top up your balance."},
            ErrorKind.OUT_OF_FUNDS,
        ),
        Reply(
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "prompt"],
                        "msg": CONTENT_CHECKER,
                        "type": "content_policy_violation",
                    }
                ]
            },
            ErrorKind.CONTENT_POLICY,
            {"X-Fal-Retryable": "false"},
            vendor_code="content_policy_violation",
        ),
        Reply(
            422,
            {"detail": [{"loc": ["body", "duration"], "msg": "bad", "type": "enum"}]},
            ErrorKind.INVALID_INPUT,
        ),
        Reply(
            429,
            {"detail": "Concurrency limit reached"},
            ErrorKind.RATE_LIMITED,
            {"Retry-After": "17"},
            retry_after_s=17,
        ),
        Reply(500, {"detail": "Internal error"}, ErrorKind.TRANSIENT),
        Reply(500, {"detail": "Internal error"}, ErrorKind.UNKNOWN, {"X-Fal-Retryable": "false"}),
        Reply(503, "<html>Service Unavailable</html>", ErrorKind.TRANSIENT),
        Reply(
            418,
            {"detail": "Runner went away", "error_type": "runner_disconnected"},
            ErrorKind.TRANSIENT,
            {"X-Fal-Error-Type": "runner_disconnected"},
        ),
    ),
    malformed_creates=(
        *NOT_AN_OBJECT,
        b'{"request_id": "00000000-0000-4',
        {"status": "IN_QUEUE"},  # no request_id
    ),
    polls=(
        {"state": ProviderState.QUEUED, "vendor_status": "IN_QUEUE", "queue_position": 1},
        {"state": ProviderState.QUEUED, "vendor_status": "IN_QUEUE", "queue_position": 0},
        {"state": ProviderState.RUNNING, "vendor_status": "IN_PROGRESS", "queue_position": None},
        {"state": ProviderState.SUCCEEDED, "vendor_status": "COMPLETED", "queue_position": None},
    ),
    poll_gets=lambda job_id: (
        [(f"/fal-ai/kling-video/requests/{job_id}/status", {})] * 4
        + [(f"/fal-ai/kling-video/requests/{job_id}", {})]
    ),
    unknown_job="no-such-request",
    failures=(
        Failure(
            CONTENT_CHECKER,
            ErrorKind.CONTENT_POLICY,
            vendor_code="content_policy_violation",
            status_code=422,
        ),
        Failure(
            "Prompt was flagged by a content checker",
            ErrorKind.CONTENT_POLICY,
            vendor_code="value_error",
            status_code=422,
        ),
        Failure(
            "The model produced no video",
            ErrorKind.INVALID_INPUT,
            vendor_code="no_media_generated",
            status_code=422,
        ),
        Failure(
            "Request timed out", ErrorKind.TRANSIENT, vendor_code="request_timeout", status_code=504
        ),
        Failure(
            "Runner disconnected",
            ErrorKind.TRANSIENT,
            vendor_code="runner_disconnected",
            status_code=503,
            knobs={"retryable": True},
        ),
        Failure(
            "Model crashed",
            ErrorKind.UNKNOWN,
            vendor_code="internal_server_error",
            status_code=500,
            knobs={"retryable": False},
        ),
    ),
    fail_job=fail_job,
    failed_status="COMPLETED",  # the status said COMPLETED; the result holds the failure
    exact_failure_detail=False,
    status_body=status_body,
    status_words=(
        ("IN_QUEUE", ProviderState.QUEUED),
        ("IN_PROGRESS", ProviderState.RUNNING),
        ("COMPLETED", ProviderState.RUNNING),  # not finished for us until the result is read
        ("FAILED", ProviderState.FAILED),
        ("CANCELED", ProviderState.CANCELLED),
        ("CANCELLED", ProviderState.CANCELLED),
    ),
    status_fields=lambda word, state: {"queue_position": 3 if word == "IN_QUEUE" else None},
    status_strategy=any_json | status_like,
    strictness=Strictness(
        good={"prompt": "a cat", "duration": "5"},
        accepted=200,
        bad=(
            {"prompt": "a cat", "duration": 5},
            {"prompt": "a cat", "resolution": "1080p"},
            {"prompt": "a cat", "multi_prompt": [{"prompt": "x", "duration": "3"}]},
            {"multi_prompt": [{"prompt": "x", "duration": 3}]},
            {"prompt": "a cat", "shot_type": "intelligence"},
            {"prompt": "a cat", "generate_audio": "true"},
            {"prompt": "a cat", "voice_ids": ["a", "b", "c"]},
        ),
        refusal=lambda reply: reply["detail"][0]["loc"][0] == "body",
        foreign_auth={"Authorization": "Bearer x"},
    ),
    cancel_call=lambda job_id: ("PUT", f"/fal-ai/kling-video/requests/{job_id}/cancel"),
    webhooks=Webhooks(
        send=send,
        flag=flag,
        failure_fields={"status_code": 422},
        bodies=st.binary(max_size=200) | any_json.map(encoded) | webhook_like.map(encoded),
        headers=st.dictionaries(
            st.sampled_from([f"X-Fal-Webhook-{name}" for name in WEBHOOK_HEADERS] + ["x"]),
            st.text(max_size=30) | st.just(str(NOW)),
        ),
        parsers=(verifier,),
        garbage=(b'{"request_id": "p1", "status": "DONE"}', b"[1]", b"{oops"),
        signer=Signer(
            parser=verifier,
            sign=sign,
            sample=sample,
            signature_header="X-Fal-Webhook-Signature",
            timestamp_header="X-Fal-Webhook-Timestamp",
            garbage_signature="zz" * 64,  # not hex
            forgeries={
                "other_request_id": forged("Request-Id", "r2"),
                "other_user_id": forged("User-Id", "someone-else"),
                "no_request_id": forged("Request-Id", None),
                "no_user_id": forged("User-Id", None),
                "short_signature": short_signature,
            },
            expected_event=expected_event,
            background=key_refresh,
            sign_as_double=sign_as_double,
        ),
    ),
)

"""EachLabs facts for the shared contract suite.

The wire format is documented in tests/provider_doubles/eachlabs.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.eachlabs import EachLabsProvider
from bot.providers.errors import ErrorKind
from bot.providers.http import ProviderHttp
from bot.settings import EachLabsSettings
from tests.provider_cases.case import Failure, Reply, Route, Setup, Signer, VendorCase, Webhooks
from tests.provider_doubles.base import FakeJob, VendorDouble
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble
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
)
from tests.provider_support import json_values as any_json

SECRET = "whsec-eachlabs-test"
HOOK = "https://bot.example/webhooks/eachlabs/tok"
MODEL = "kling-v3-pro-text-to-video"


def adapter(http: ProviderHttp, setup: Setup, *, secret: str | None = SECRET) -> EachLabsProvider:
    settings = EachLabsSettings(
        api_key=SecretStr(setup.key),
        base_url=f"{setup.origin}/v1",
        webhook_secret=SecretStr(secret) if secret else None,
    )
    return EachLabsProvider(settings, http, now_s=setup.clock())


def parser(secret: str | None = None) -> EachLabsProvider:
    """An adapter that only parses; with `secret`, webhooks must be signed with it (at NOW)."""
    settings = EachLabsSettings(webhook_secret=SecretStr(secret) if secret else None)
    return EachLabsProvider(settings, NO_HTTP, now_s=lambda: NOW)


def fail_job(double: VendorDouble, job: FakeJob, failure: Failure) -> None:
    assert isinstance(failure.vendor_code, str)
    job.error_code = failure.vendor_code


async def send(double: VendorDouble, job: FakeJob, url: str, success: bool, variant: str) -> int:
    assert isinstance(double, EachLabsDouble)
    return await double.send_webhook(job, url, success=success, variant=variant)


def flag(job: FakeJob) -> None:
    job.error_code, job.error = "PROVIDER_REJECTED", "content safety: nudity"


def sign(body: bytes, *, ts: int = NOW, ref: str = "p1", wrong_key: bool = False) -> dict[str, str]:
    return EachLabsDouble.sign("other" if wrong_key else SECRET, body, ts)


def sample(job_id: str) -> bytes:
    return json.dumps({"exec_id": job_id, "status": "succeeded", "output": SAMPLE_VIDEO}).encode()


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


status_like = st.fixed_dictionaries(
    {"status": st.sampled_from(["success", "error", "processing", "created", "x"]) | any_json},
    optional={"output": any_json, "id": any_json, "exec_id": any_json, "error": any_json},
)

CASE = VendorCase(
    name="eachlabs",
    double_type=EachLabsDouble,
    adapter=adapter,
    parser=parser,
    api_key=API_KEY,
    wrong_key="wrong",
    key_header=("X-API-Key", API_KEY),
    hook=HOOK,
    routes=(Route("default", "/v1/prediction/", "pred-000001"),),
    plain_body={
        "model": MODEL,
        "input": KLING_PLAIN,
        "webhook_url": HOOK,
        "webhook_secret": SECRET,
    },
    plain_job=lambda double: ProviderJob("pred-000001"),
    plain_status={"state": ProviderState.QUEUED},
    wire=(
        (
            "full",
            PLAIN_FULL,
            {"model": MODEL, "input": KLING_FULL},
        ),
        (
            "multishot",
            MULTI,
            {"model": MODEL, "input": KLING_MULTI},
        ),
        (
            "voice",
            VOICE,
            {"model": MODEL, "input": KLING_VOICE},
        ),
    ),
    create_ok=200,
    create_errors=(
        Reply(
            400,
            {"status": "error", "message": "Invalid input", "details": "duration"},
            ErrorKind.INVALID_INPUT,
        ),
        Reply(
            400,
            {"status": "error", "message": "Prompt flagged by content moderation"},
            ErrorKind.CONTENT_POLICY,
        ),
        Reply(401, {"error": "Invalid API key"}, ErrorKind.AUTH),
        Reply(402, {"error": "Insufficient balance"}, ErrorKind.OUT_OF_FUNDS),
        Reply(
            403,
            {"status": "error", "message": "Insufficient credits, please top up"},
            ErrorKind.OUT_OF_FUNDS,
        ),
        Reply(
            429,
            {"status": "error", "message": "Rate limit exceeded"},
            ErrorKind.RATE_LIMITED,
            {"Retry-After": "17"},
            retry_after_s=17,
        ),
        Reply(500, {"status": "error", "message": "internal"}, ErrorKind.TRANSIENT),
        Reply(503, "<html>Service Unavailable</html>", ErrorKind.TRANSIENT),
    ),
    malformed_creates=(
        *NOT_AN_OBJECT,
        b'{"status": "succ',
        {"status": "success", "message": "ok"},  # no predictionID
    ),
    polls=(
        {"state": ProviderState.QUEUED, "vendor_status": "created"},
        {"state": ProviderState.QUEUED, "vendor_status": "starting"},
        {"state": ProviderState.RUNNING, "vendor_status": "processing"},
        {"state": ProviderState.SUCCEEDED, "vendor_status": "success"},
    ),
    poll_gets=lambda job_id: [(f"/v1/prediction/{job_id}", {})] * 4,
    unknown_job="pred-unknown",
    failures=(
        Failure("generation failed", ErrorKind.UNKNOWN, vendor_code="PROVIDER_FAILED"),
        Failure(
            "Content safety check failed for the prompt",
            ErrorKind.CONTENT_POLICY,
            vendor_code="PROVIDER_REJECTED",
        ),
        Failure("upstream refused", ErrorKind.CONTENT_POLICY, vendor_code="PROVIDER_REJECTED"),
        Failure(
            "duration not allowed", ErrorKind.INVALID_INPUT, vendor_code="INPUT_VALIDATION_ERROR"
        ),
        Failure("took too long", ErrorKind.TRANSIENT, vendor_code="EXECUTION_TIMEOUT"),
        Failure("slow down", ErrorKind.RATE_LIMITED, vendor_code="PROVIDER_RATE_LIMIT"),
    ),
    fail_job=fail_job,
    failed_status="error",
    status_body=lambda word: {"status": word, "output": SAMPLE_VIDEO},
    status_words=(
        ("created", ProviderState.QUEUED),
        ("starting", ProviderState.QUEUED),
        ("processing", ProviderState.RUNNING),
        ("success", ProviderState.SUCCEEDED),
        ("succeeded", ProviderState.SUCCEEDED),
        ("error", ProviderState.FAILED),
        ("failed", ProviderState.FAILED),
        ("cancelled", ProviderState.CANCELLED),
        ("canceled", ProviderState.CANCELLED),
    ),
    status_strategy=any_json | status_like,
    cancel_call=lambda job_id: ("POST", f"/v1/prediction/{job_id}/cancel"),
    webhooks=Webhooks(
        send=send,
        flag=flag,
        variants=("seed", "docs", "legacy"),
        bodies=st.binary(max_size=200) | any_json.map(encoded) | status_like.map(encoded),
        headers=st.dictionaries(
            st.sampled_from(["X-Webhook-Signature", "X-Webhook-Timestamp", "Content-Type", "x"]),
            st.text(max_size=30),
        ),
        parsers=(parser, lambda: parser(SECRET)),
        names_the_job=False,
        signer=Signer(
            parser=lambda: parser(SECRET),
            sign=sign,
            sample=sample,
            signature_header="X-Webhook-Signature",
            timestamp_header="X-Webhook-Timestamp",
            garbage_signature="sha256=zz",
        ),
    ),
)

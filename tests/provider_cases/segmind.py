"""Segmind facts for the shared contract suite.

The wire format is documented in tests/provider_doubles/segmind.py.

Segmind creates three ways: `auto` (v2, and v1 once v2 lacks the model), `v2` (async) and `v1`
(synchronous); the create rules hold for each.
"""

from __future__ import annotations

from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.errors import ErrorKind
from bot.providers.http import ProviderHttp
from bot.providers.segmind import SegmindProvider
from bot.settings import SegmindSettings
from tests.provider_cases.case import Failure, Reply, Route, Setup, VendorCase
from tests.provider_doubles.base import FakeJob, VendorDouble
from tests.provider_doubles.segmind import API_KEY, MODEL, SegmindDouble
from tests.provider_support import (
    KLING_FULL,
    KLING_MULTI,
    KLING_PLAIN,
    KLING_VOICE,
    MULTI,
    NO_HTTP,
    NOT_AN_OBJECT,
    PLAIN,
    PLAIN_FULL,
    SAMPLE_VIDEO,
    VOICE,
)
from tests.provider_support import json_values as any_json

V2 = f"/v2/{MODEL}"
V1 = f"/v1/{MODEL}"
FIRST_ID = "sg-req-000001"


def adapter(http: ProviderHttp, setup: Setup) -> SegmindProvider:
    settings = SegmindSettings(
        api_key=SecretStr(setup.key), base_url=setup.origin, api_mode=setup.route
    )
    return SegmindProvider(
        settings,
        http,
        work_dir=setup.work_dir,
        v1_timeout_s=setup.reply_timeout_s,
        now_s=setup.clock(),
    )


def parser() -> SegmindProvider:
    return SegmindProvider(SegmindSettings(), NO_HTTP)


def poll_error(double: VendorDouble, reply: Reply) -> None:
    assert isinstance(double, SegmindDouble)
    double.next_poll(reply.status, reply.body, dict(reply.headers))


def fail_job(double: VendorDouble, job: FakeJob, failure: Failure) -> None:
    assert isinstance(double, SegmindDouble)
    double.failed_http = failure.knobs["failed_http"]  # how the status endpoint says FAILED


def links(double: VendorDouble, job_id: str) -> dict[str, str]:
    base = f"{double.base_url}/v2/requests/{job_id}"
    return {"api": "v2", "status_url": f"{base}/status", "response_url": base}


status_like = st.fixed_dictionaries(
    {"status": st.sampled_from(["COMPLETED", "FAILED", "QUEUED", "PROCESSING", "x"]) | any_json},
    optional={"output": any_json, "video": any_json, "error": any_json, "message": any_json},
)

FAILURES: list[tuple[str, ErrorKind]] = [
    ("Prompt is Mandatory and must be string", ErrorKind.UNKNOWN),
    ("The prompt was flagged by content moderation", ErrorKind.CONTENT_POLICY),
    ("Output video failed the NSFW safety check", ErrorKind.CONTENT_POLICY),
    ("invalid parameter: duration", ErrorKind.INVALID_INPUT),
    ("upstream timed out", ErrorKind.TRANSIENT),
]


def rate_limited_until(reset_at: str) -> dict[str, str]:
    return {"x-rate-limit-reset-at-utc": reset_at}


CASE = VendorCase(
    name="segmind",
    double_type=SegmindDouble,
    adapter=adapter,
    parser=parser,
    api_key=API_KEY,
    wrong_key="SG_wrong",
    key_header=("x-api-key", API_KEY),
    absent_headers=("Authorization",),
    hook="https://bot.example/webhooks/segmind/tok",
    routes=(
        Route("auto", V2, FIRST_ID),
        Route("v2", V2, FIRST_ID),
        Route("v1", V1, f"v1-{FIRST_ID}"),
    ),
    direct_route="v2",
    plain_body=KLING_PLAIN,
    plain_job=lambda double: ProviderJob(FIRST_ID, links(double, FIRST_ID)),
    plain_status={"state": ProviderState.QUEUED, "vendor_status": "QUEUED"},
    wire=(
        ("full", PLAIN_FULL, KLING_FULL),
        ("multishot", MULTI, {**KLING_MULTI, "shot_type": "customize"}),
        ("voice", VOICE, KLING_VOICE),
    ),
    refused=(
        (
            "intelligent-shots",
            PLAIN.model_copy(update={"shot_type": "intelligent"}),
            ["Segmind supports shot type customize only."],
        ),
        (
            "4k",
            PLAIN.model_copy(update={"resolution": "4k"}),
            ["Segmind renders 1080p only (got 4k)."],
        ),
    ),
    create_ok=200,
    create_errors=(
        Reply(400, {"error": "duration must be one of 3..15"}, ErrorKind.INVALID_INPUT),
        Reply(400, {"error": "Prompt flagged by content moderation"}, ErrorKind.CONTENT_POLICY),
        Reply(401, {"error": "Missing Authorization or x-api-key in header"}, ErrorKind.AUTH),
        Reply(
            401,
            {"error": "invalid_api_key", "error_description": "API key is invalid."},
            ErrorKind.AUTH,
        ),
        Reply(403, {"error": "Insufficient permissions"}, ErrorKind.AUTH),
        Reply(
            406,
            {"error": "Insufficient credits. Balance: 0.12, required: 0.84"},
            ErrorKind.OUT_OF_FUNDS,
        ),
        Reply(406, "Insufficient credits", ErrorKind.OUT_OF_FUNDS),
        Reply(406, "", ErrorKind.OUT_OF_FUNDS),
        Reply(406, {"error": "Invalid content type"}, ErrorKind.UNKNOWN),
        Reply(
            406, {"error": "Team spend limit reached: monthly cap of 50 credits"}, ErrorKind.AUTH
        ),
        Reply(406, {"error": "aspect_ratio value 4:3 is not allowed"}, ErrorKind.INVALID_INPUT),
        Reply(404, {"error": f"Model {MODEL} not found"}, ErrorKind.UNKNOWN),
        Reply(
            405,
            "<html><body><h1>405 Not Allowed</h1></body></html>",
            ErrorKind.UNKNOWN,
            {"Content-Type": "text/html"},
            detail_has="405 Not Allowed",
            detail_lacks="<",
        ),
        Reply(410, {"error": "This model has been retired"}, ErrorKind.UNKNOWN),
        Reply(
            429,
            {"error": "rate_limit_exceeded"},
            ErrorKind.RATE_LIMITED,
            rate_limited_until("2027-01-15T08:00:17Z"),  # NOW is 2027-01-15T08:00:00Z
            retry_after_s=17.0,
        ),
        Reply(500, {"error": "Internal server error"}, ErrorKind.TRANSIENT),
        Reply(
            503,
            "<html>Service Unavailable</html>",
            ErrorKind.TRANSIENT,
            {"Content-Type": "text/html"},
        ),
    ),
    malformed_creates=(
        *NOT_AN_OBJECT,
        b'{"request_id": "sg-',
        b'{"status": "QUEUED"}',
    ),
    polls=(
        {"state": ProviderState.QUEUED, "vendor_status": "QUEUED"},
        {"state": ProviderState.RUNNING, "vendor_status": "PROCESSING"},
        {"state": ProviderState.SUCCEEDED, "vendor_status": "COMPLETED", "progress_pct": 100},
    ),
    poll_gets=lambda job_id: (
        [(f"/v2/requests/{job_id}/status", {})] * 3 + [(f"/v2/requests/{job_id}", {})]
    ),
    unknown_job="sg-req-unknown",
    script_poll=poll_error,
    poll_errors=(
        Reply(
            429,
            {"error": "rate_limit_exceeded"},
            ErrorKind.RATE_LIMITED,
            rate_limited_until("9"),
            retry_after_s=9.0,
        ),
        Reply(502, b"<html>Bad Gateway</html>", ErrorKind.TRANSIENT),
        Reply(200, b"{not json", ErrorKind.UNKNOWN),
        Reply(200, b'{"status": "PROCES', ErrorKind.UNKNOWN),
        Reply(200, b"[]", ErrorKind.UNKNOWN),
        Reply(200, b'{"status": 3}', ErrorKind.UNKNOWN),
        Reply(200, b'{"state": "x"}', ErrorKind.UNKNOWN),
    ),
    failures=tuple(
        Failure(message, kind, knobs={"failed_http": failed_http})
        for failed_http in (422, 200)
        for message, kind in FAILURES
    ),
    fail_job=fail_job,
    failed_status="FAILED",
    status_body=lambda word: {"status": word, "output": SAMPLE_VIDEO, "error": "boom"},
    status_words=(
        ("QUEUED", ProviderState.QUEUED),
        ("PROCESSING", ProviderState.RUNNING),
        ("COMPLETED", ProviderState.SUCCEEDED),
        ("FAILED", ProviderState.FAILED),
        ("completed", ProviderState.SUCCEEDED),
        ("processing", ProviderState.RUNNING),
    ),
    status_error_detail="boom",
    unreadable_statuses=(
        {"status": "EXPLODED"},
        {"metrics": {}},
        {"status": None, "output": "https://x/"},
    ),
    # the light status reply has no output: not finished for us yet
    no_video_statuses=(({"status": "COMPLETED"}, {"vendor_status": "COMPLETED"}),),
    status_strategy=any_json | status_like,
)

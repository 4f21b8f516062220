"""Novita adapter against its loopback double: wire format, statuses, errors, webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.capabilities import CAPABILITIES
from bot.providers.download import DownloadPolicy, download
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError, WebhookRefused
from bot.providers.http import ProviderHttp
from bot.providers.novita import NovitaProvider
from bot.request import VideoRequest
from bot.settings import NovitaSettings
from tests.provider_doubles.novita import API_KEY, NovitaDouble
from tests.provider_support import (
    MULTI,
    NO_HTTP,
    PLAIN,
    PLAIN_FULL,
    VOICE,
    free_port,
    http,
    json_values,
)

__all__ = ["http"]
HOOK = "https://bot.example/webhooks/novita/tok123"
CREATE_PATH = "/v3/async/kling-v3.0-pro-t2v"


@pytest.fixture
async def double() -> AsyncIterator[NovitaDouble]:
    async with NovitaDouble() as d:
        yield d


def adapter(double: NovitaDouble, http: ProviderHttp, *, key: str = API_KEY) -> NovitaProvider:
    return NovitaProvider(NovitaSettings(api_key=SecretStr(key), base_url=double.base_url), http)


def parser() -> NovitaProvider:
    return NovitaProvider(NovitaSettings(), NO_HTTP)


# -- the request on the wire ------------------------------------------------------------------


async def test_plain_request_on_the_wire(double: NovitaDouble, http: ProviderHttp) -> None:
    sub = await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    [create] = double.creates_of(CREATE_PATH)
    assert create.header("Authorization") == f"Bearer {API_KEY}"
    assert create.header("Content-Type") == "application/json"
    assert create.json == {
        "prompt": "A red fox running through snow",
        "duration": 5,
        "aspect_ratio": "16:9",
        "sound": True,
        "extra": {"webhook": {"url": HOOK}},
    }
    assert type(create.json["duration"]) is int
    assert sub.job == ProviderJob("nv-task-000001", {"endpoint": "kling-v3.0-pro-t2v"})
    assert sub.status.state is ProviderState.QUEUED
    assert double.creates == 1


async def test_all_supported_options_on_the_wire(double: NovitaDouble, http: ProviderHttp) -> None:
    # Novita has no shot type: the capability table refuses it, so the bot never sends it
    assert CAPABILITIES["novita"].problems(PLAIN_FULL) == [
        "Novita does not support choosing a shot type."
    ]
    request = PLAIN_FULL.model_copy(update={"shot_type": None})
    await adapter(double, http).submit(request, webhook_url=None)
    [create] = double.creates_of(CREATE_PATH)
    assert create.json == {
        "prompt": "A lighthouse at dusk, waves crashing",
        "negative_prompt": "blurry, watermark",
        "duration": 10,
        "aspect_ratio": "9:16",
        "sound": False,
        "cfg_scale": 0.7,
    }


async def test_a_shot_type_is_refused_before_sending(
    double: NovitaDouble, http: ProviderHttp
) -> None:
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN_FULL, webhook_url=None)
    assert info.value.kind is ErrorKind.INVALID_INPUT
    assert info.value.detail == "Novita does not support choosing a shot type."
    assert double.creates == 0 and double.requests == []


@pytest.mark.parametrize(
    ("resolution", "path"),
    [
        ("720p", "/v3/async/kling-v3.0-std-t2v"),
        ("1080p", "/v3/async/kling-v3.0-pro-t2v"),
        ("4k", "/v3/async/kling-v3.0-4k-t2v"),
        (None, "/v3/async/kling-v3.0-pro-t2v"),
    ],
)
async def test_resolution_picks_the_endpoint(
    double: NovitaDouble, http: ProviderHttp, resolution: str | None, path: str
) -> None:
    request = PLAIN.model_copy(update={"resolution": resolution})
    sub = await adapter(double, http).submit(request, webhook_url=None)
    assert [r.path for r in double.requests] == [path]
    assert "resolution" not in double.requests[0].json
    assert sub.job.data["endpoint"] == path.rsplit("/", 1)[1]


async def test_multishot_request_on_the_wire(double: NovitaDouble, http: ProviderHttp) -> None:
    await adapter(double, http).submit(MULTI, webhook_url=None)
    [create] = double.creates_of(CREATE_PATH)
    assert create.json == {
        "multi_prompt": [
            {"prompt": "A fox wakes up in its den", "duration": 3},
            {"prompt": "The fox runs across a snowy field", "duration": 5},
        ],
        "duration": 8,
        "aspect_ratio": "1:1",
        "sound": True,
    }
    assert all(type(shot["duration"]) is int for shot in create.json["multi_prompt"])


async def test_voice_ids_cannot_be_sent(double: NovitaDouble, http: ProviderHttp) -> None:
    assert CAPABILITIES["novita"].problems(VOICE) == ["Novita does not support voice ids."]
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(VOICE, webhook_url=None)
    assert info.value.kind is ErrorKind.INVALID_INPUT and not info.value.outcome_unknown
    assert double.creates == 0 and double.requests == []


async def test_webhook_refused_by_the_endpoint_is_dropped(
    double: NovitaDouble, http: ProviderHttp
) -> None:
    double.accept_extra = False
    sub = await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    first, second = double.creates_of(CREATE_PATH)
    assert first.json["extra"] == {"webhook": {"url": HOOK}}
    assert "extra" not in second.json
    assert {k: v for k, v in first.json.items() if k != "extra"} == second.json
    assert double.creates == 2 and len(double.jobs) == 1
    assert sub.job.id == "nv-task-000001"


async def test_other_refusals_are_not_resent(double: NovitaDouble, http: ProviderHttp) -> None:
    double.next_create(
        "status", 400, novita_error(400, "INVALID_REQUEST_BODY", "duration must be 3..15")
    )
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    assert info.value.kind is ErrorKind.INVALID_INPUT
    assert double.creates == 1


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("TASK_STATUS_QUEUED", ProviderState.QUEUED),
        ("TASK_STATUS_PROCESSING", ProviderState.RUNNING),
        ("TASK_STATUS_SUCCEED", ProviderState.SUCCEEDED),
        ("TASK_STATUS_FAILED", ProviderState.FAILED),
        ("TASK_STATUS_CANCELED", ProviderState.CANCELLED),
        ("SUCCEED", ProviderState.SUCCEEDED),
        ("processing", ProviderState.RUNNING),
    ],
)
def test_every_status_word(word: str, state: ProviderState) -> None:
    status = parser().parse_status(
        {
            "task": {"task_id": "t1", "status": word, "reason": "boom"},
            "videos": [{"video_url": "https://cdn.example/v.mp4", "video_url_ttl": "3600"}],
        }
    )
    assert status.state is state and status.vendor_status == word
    if state is ProviderState.SUCCEEDED:
        assert status.video_url == "https://cdn.example/v.mp4"
    if state is ProviderState.FAILED:
        assert status.error is not None and status.error.detail == "boom"


def test_unknown_status_word_is_an_error() -> None:
    with pytest.raises(ProviderError) as info:
        parser().parse_status({"task": {"status": "TASK_STATUS_EXPLODED"}})
    assert info.value.kind is ErrorKind.UNKNOWN
    with pytest.raises(ProviderError):
        parser().parse_status({"videos": []})


def test_success_without_a_video_is_still_running() -> None:
    status = parser().parse_status(
        {"task": {"status": "TASK_STATUS_SUCCEED", "progress_percent": 100}, "videos": []}
    )
    assert status.state is ProviderState.RUNNING and status.video_url is None


def test_failure_text_falls_back_to_err_detail() -> None:
    status = parser().parse_status(
        {"task": {"status": "TASK_STATUS_FAILED", "reason": "", "err_detail": "risk control"}}
    )
    assert status.error is not None and status.error.kind is ErrorKind.CONTENT_POLICY
    assert status.error.detail == "risk control"


async def test_poll_through_to_success_and_download(
    double: NovitaDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    seen = [await provider.poll(sub.job) for _ in range(3)]
    assert [s.state for s in seen] == [
        ProviderState.QUEUED,
        ProviderState.RUNNING,
        ProviderState.SUCCEEDED,
    ]
    assert [s.vendor_status for s in seen] == [
        "TASK_STATUS_QUEUED",
        "TASK_STATUS_PROCESSING",
        "TASK_STATUS_SUCCEED",
    ]
    assert (seen[0].progress_pct, seen[0].eta_s) == (0, 90.0)
    assert (seen[1].progress_pct, seen[1].eta_s) == (40, 90.0)
    polls = [r for r in double.requests if r.method == "GET"]
    assert [p.query for p in polls] == [{"task_id": sub.job.id}] * 3
    assert all(p.header("Authorization") == f"Bearer {API_KEY}" for p in polls)
    final = seen[-1]
    assert final.video_url == double.file_url(sub.job.id) and final.progress_pct == 100
    size = await download(
        http.session,
        final.video_url,
        tmp_path / "v.mp4",
        max_bytes=10_000_000,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url]),
    )
    assert (tmp_path / "v.mp4").read_bytes() == double.video_bytes
    assert size == len(double.video_bytes)


async def test_expired_result_url(double: NovitaDouble, http: ProviderHttp, tmp_path: Path) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    double.jobs[sub.job.id].script = ["succeeded"]
    status = await provider.poll(sub.job)
    assert status.video_url is not None
    double.expired_files.add(sub.job.id)
    with pytest.raises(ProviderError) as info:
        await download(
            http.session,
            status.video_url,
            tmp_path / "v.mp4",
            max_bytes=10**7,
            timeout_s=5,
            policy=DownloadPolicy.trusting([double.base_url]),
        )
    assert info.value.kind is ErrorKind.RESULT_EXPIRED
    assert not list(tmp_path.iterdir()), "no partial file is left behind"


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("generation failed", ErrorKind.UNKNOWN),
        ("The prompt failed the content moderation check", ErrorKind.CONTENT_POLICY),
        ("sensitive content detected in the output video", ErrorKind.CONTENT_POLICY),
        ("invalid parameter: duration", ErrorKind.INVALID_INPUT),
        ("upstream server timeout", ErrorKind.TRANSIENT),
    ],
)
async def test_job_failures_are_classified(
    double: NovitaDouble, http: ProviderHttp, reason: str, kind: ErrorKind
) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    job = double.jobs[sub.job.id]
    job.script, job.error = ["queued", "failed"], reason
    assert (await provider.poll(sub.job)).state is ProviderState.QUEUED
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.vendor_status == "TASK_STATUS_FAILED"
    assert status.error is not None
    assert status.error.kind is kind and status.error.detail == reason


async def test_cancel_is_not_offered(double: NovitaDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert await provider.cancel(sub.job) is False
    assert CAPABILITIES["novita"].cancel is False
    assert [r.method for r in double.requests] == ["POST"]


# -- HTTP errors on create and poll ----------------------------------------------------------


def novita_error(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"code": status, "reason": reason, "message": message, "metadata": {}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "code"),
    [
        (
            400,
            novita_error(400, "INVALID_REQUEST_BODY", "duration must be between 3 and 15"),
            {},
            ErrorKind.INVALID_INPUT,
            "INVALID_REQUEST_BODY",
        ),
        (
            400,
            novita_error(400, "INVALID_REQUEST_BODY", "prompt contains sensitive content"),
            {},
            ErrorKind.CONTENT_POLICY,
            "INVALID_REQUEST_BODY",
        ),
        (
            401,
            novita_error(401, "INVALID_API_KEY", "invalid api key"),
            {},
            ErrorKind.AUTH,
            "INVALID_API_KEY",
        ),
        (
            403,
            novita_error(403, "NOT_ENOUGH_BALANCE", "please recharge your account"),
            {},
            ErrorKind.OUT_OF_FUNDS,
            "NOT_ENOUGH_BALANCE",
        ),
        (
            403,
            novita_error(403, "PERMISSION_DENIED", "identity verification required"),
            {},
            ErrorKind.AUTH,
            "PERMISSION_DENIED",
        ),
        (
            429,
            novita_error(429, "RATE_LIMIT_EXCEEDED", "too many requests"),
            {"Retry-After": "17"},
            ErrorKind.RATE_LIMITED,
            "RATE_LIMIT_EXCEEDED",
        ),
        (503, "<html>Service Unavailable</html>", {}, ErrorKind.TRANSIENT, None),
        (
            500,
            novita_error(500, "INTERNAL_ERROR", "internal error"),
            {},
            ErrorKind.TRANSIENT,
            "INTERNAL_ERROR",
        ),
    ],
)
async def test_create_errors_are_classified(
    double: NovitaDouble,
    http: ProviderHttp,
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: ErrorKind,
    code: str | None,
) -> None:
    double.next_create("status", status, body, headers)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    error = info.value
    assert error.kind is kind and error.status_code == status and error.vendor_code == code
    assert not error.outcome_unknown and error.provider == "novita"
    assert error.retry_after_s == (17 if kind is ErrorKind.RATE_LIMITED else None)
    assert double.creates == 1


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"task_id": "nv-1', b"", b"[1, 2]", b'"text"', b'{"task_id": ""}', b"{}"],
)
async def test_malformed_and_truncated_create_replies(
    double: NovitaDouble, http: ProviderHttp, body: bytes
) -> None:
    double.next_create("status", 200, body)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    # the vendor said 200: a job may exist although we cannot read its id
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown
    assert double.creates == 1


@pytest.mark.parametrize("status", [502, 504])
async def test_gateway_timeout_on_create_is_an_unknown_outcome(
    double: NovitaDouble, http: ProviderHttp, status: int
) -> None:
    double.next_create("status", status, "<html>Gateway Time-out</html>")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    assert double.creates == 1  # not re-sent without the webhook either


async def test_poll_errors(double: NovitaDouble, http: ProviderHttp) -> None:
    provider = adapter(double, http)
    with pytest.raises(ProviderError) as info:
        await provider.poll(ProviderJob("nv-task-unknown"))
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.vendor_code == "TASK_NOT_FOUND"
    with pytest.raises(ProviderError) as auth:
        await adapter(double, http, key="wrong").poll(ProviderJob("nv-task-000001"))
    assert auth.value.kind is ErrorKind.AUTH
    double.next_poll(429, novita_error(429, "RATE_LIMIT_EXCEEDED", "slow down"))
    with pytest.raises(ProviderError) as limited:
        await provider.poll(ProviderJob("nv-task-000001"))
    assert limited.value.kind is ErrorKind.RATE_LIMITED
    double.next_poll(503, {"message": "unavailable"})
    with pytest.raises(ProviderError) as down:
        await provider.poll(ProviderJob("nv-task-000001"))
    assert down.value.kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"task": {"task_id": "nv-1", "status": "TASK_STA',
        b"[]",
        b'{"task": "queued"}',
        b'{"task": {"status": 7}}',
    ],
)
async def test_malformed_and_truncated_poll_replies(
    double: NovitaDouble, http: ProviderHttp, body: bytes
) -> None:
    double.next_poll(200, body)
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).poll(ProviderJob("nv-task-000001"))
    assert info.value.kind is ErrorKind.UNKNOWN


# -- a create is never sent twice --------------------------------------------------------------


async def test_reset_after_send_is_not_retried(double: NovitaDouble, http: ProviderHttp) -> None:
    double.next_create("reset")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=HOOK)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_timeout_after_send_is_not_retried(double: NovitaDouble, http: ProviderHttp) -> None:
    double.next_create("hang")
    with pytest.raises(ProviderError) as info:
        await adapter(double, http).submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    await asyncio.sleep(0.3)
    assert double.creates == 1


async def test_connection_refused_is_retried_once_listening(http: ProviderHttp) -> None:
    port = free_port()
    double = NovitaDouble()
    provider = NovitaProvider(
        NovitaSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{port}"), http
    )

    async def start_late() -> None:
        await asyncio.sleep(0.1)
        await double.start(port)

    starter = asyncio.create_task(start_late())
    try:
        sub = await provider.submit(PLAIN, webhook_url=None)
        assert sub.job.id == "nv-task-000001" and double.creates == 1
    finally:
        await starter
        await double.stop()


async def test_connection_refused_forever_is_transient_not_unknown(http: ProviderHttp) -> None:
    provider = NovitaProvider(
        NovitaSettings(api_key=SecretStr(API_KEY), base_url=f"http://127.0.0.1:{free_port()}"),
        http,
    )
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown


# -- webhooks --------------------------------------------------------------------------------


async def test_real_webhook_is_accepted(
    double: NovitaDouble, http: ProviderHttp, receiver: Any
) -> None:
    url, received = receiver
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=url)
    assert await double.send_webhook(double.jobs[sub.job.id]) == 200
    [(headers, body)] = received
    event = provider.parse_webhook(headers, body)
    assert event.provider_job_id == sub.job.id and event.delivery_id is None
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    assert event.status.video_url == double.file_url(sub.job.id)


async def test_failure_webhook(double: NovitaDouble, http: ProviderHttp, receiver: Any) -> None:
    url, received = receiver
    provider = adapter(double, http)
    sub = await provider.submit(PLAIN, webhook_url=url)
    job = double.jobs[sub.job.id]
    job.error = "content safety check failed: nudity"
    await double.send_webhook(job, success=False)
    event = provider.parse_webhook(*received[0])
    assert event.provider_job_id == sub.job.id
    assert event.status is not None and event.status.state is ProviderState.FAILED
    assert event.status.error is not None and event.status.error.kind is ErrorKind.CONTENT_POLICY


def test_bare_task_result_webhook_is_accepted() -> None:
    body = json.dumps(
        {"task": {"task_id": "t9", "status": "TASK_STATUS_PROCESSING", "progress_percent": 55}}
    ).encode()
    event = parser().parse_webhook({}, body)
    assert event.provider_job_id == "t9" and event.status is not None
    assert event.status.state is ProviderState.RUNNING and event.status.progress_pct == 55


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"event_type": "ASYNC_TASK_RESULT", "payload": "x"}',
        b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"status": "TASK_STATUS_SUCCEED"}}}',
        b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": "t", "status": "??"}}}',
        b'{"event_type": "SOMETHING_ELSE", "payload": {"task": {"task_id": "t", "status": "TASK_STATUS_QUEUED"}}}',
        b'{"event_type": "ASYNC_TASK_RESULT", "payload": {"task": {"task_id": "t", "status": "TASK_ST',
    ],
)
def test_garbage_webhooks_are_refused(body: bytes) -> None:
    with pytest.raises(WebhookParseError) as info:
        parser().parse_webhook({"Content-Type": "application/json"}, body)
    assert info.value.http_status == 400


# -- parsers never raise anything but the adapter's error type --------------------------------

task_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(
            ["TASK_STATUS_SUCCEED", "TASK_STATUS_FAILED", "TASK_STATUS_QUEUED", "x"]
        )
        | json_values
    },
    optional={
        "task_id": json_values,
        "reason": json_values,
        "eta": json_values,
        "progress_percent": json_values,
        "err_detail": json_values,
    },
)
result_like = st.fixed_dictionaries(
    {"task": task_like | json_values},
    optional={"videos": json_values | st.lists(st.dictionaries(st.just("video_url"), json_values))},
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=json_values | result_like)
def test_status_parser_only_raises_provider_error(data: Any) -> None:
    if not isinstance(data, dict):
        return
    with contextlib.suppress(ProviderError):
        parser().parse_status(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | result_like.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {"event_type": st.just("ASYNC_TASK_RESULT") | json_values, "payload": result_like}
    ).map(lambda v: json.dumps(v).encode()),
    headers=st.dictionaries(st.sampled_from(["Content-Type", "x"]), st.text(max_size=30)),
)
def test_webhook_parser_only_raises_webhook_error(body: bytes, headers: dict[str, str]) -> None:
    with contextlib.suppress(WebhookRefused):
        parser().parse_webhook(headers, body)


def test_novita_defaults() -> None:
    # audio off unless asked (the seed's `sound` default), and the pro endpoint by default
    resolved = CAPABILITIES["novita"].resolve(VideoRequest(prompt="x"))
    assert (resolved.audio, resolved.resolution) == (False, "1080p")

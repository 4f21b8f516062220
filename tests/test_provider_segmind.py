"""Segmind-only behaviour against its double: the links it returns, expired request records, the
rate-limit reset header, and the v1 synchronous fallback (and its clips). What every vendor shares
is in tests/test_provider_contract.py (Segmind's facts for it: tests/provider_cases/segmind.py)."""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.providers.base import ProviderJob, ProviderState
from bot.providers.capabilities import CAPABILITIES
from bot.providers.download import DownloadPolicy, download
from bot.providers.errors import ErrorKind, ProviderError, WebhookParseError
from bot.providers.http import ProviderHttp
from bot.providers.segmind import SegmindProvider, read_v1_json, reset_in_s
from bot.settings import SegmindSettings
from tests.provider_cases.segmind import CASE, V1, V2, parser, status_like
from tests.provider_doubles.segmind import API_KEY, SegmindDouble
from tests.provider_support import MULTI, NOW, PLAIN, Make, case, double, http, json_values, make

__all__ = ["CASE", "case", "double", "http", "make"]


def clips(tmp_path: Path) -> list[str]:
    """The v1 clips the adapter saved (its work dir is tmp_path/segmind)."""
    folder = tmp_path / "segmind"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_result_reply_may_hold_only_the_video() -> None:
    provider = parser()
    assert (
        provider.parse_status({"status": "COMPLETED", "video": "https://x.example/v.mp4"}).video_url
        == "https://x.example/v.mp4"
    )
    # a result body with only the output is finished
    only_output = provider.parse_status({"output": ["https://x.example/o.mp4"], "metrics": {}})
    assert (only_output.state, only_output.vendor_status) == (ProviderState.SUCCEEDED, "COMPLETED")
    assert only_output.video_url == "https://x.example/o.mp4"


# -- the links Segmind returns -----------------------------------------------------------------


async def test_the_urls_segmind_returns_are_used(double: SegmindDouble, make: Make) -> None:
    double.link_prefix = "/alt"
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert sub.job.data["status_url"] == f"{double.base_url}/alt/v2/requests/sg-req-000001/status"
    double.jobs[sub.job.id].script = ["succeeded"]
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.SUCCEEDED
    assert [r.path for r in double.requests if r.method == "GET"] == [
        "/alt/v2/requests/sg-req-000001/status",
        "/alt/v2/requests/sg-req-000001",
    ]


async def test_urls_on_another_origin_are_not_given_the_key(
    double: SegmindDouble, make: Make
) -> None:
    double.link_origin = "http://collector.example:9"
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert sub.job.data == {"api": "v2"}
    # a job stored with foreign links (or none) is polled at the documented paths
    forged = ProviderJob(sub.job.id, {"api": "v2", "status_url": "http://collector.example:9/s"})
    assert (await provider.poll(forged)).state is ProviderState.QUEUED
    assert (await provider.poll(ProviderJob(sub.job.id))).state is ProviderState.RUNNING
    assert [r.path for r in double.requests if r.method == "GET"] == [
        "/v2/requests/sg-req-000001/status"
    ] * 2


async def test_expired_request_record_is_not_found(double: SegmindDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert (await provider.poll(sub.job)).state is ProviderState.QUEUED
    double.expired_requests.add(sub.job.id)
    with pytest.raises(ProviderError) as info:
        await provider.poll(sub.job)
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.status_code == 404


async def test_result_endpoint_failure_after_completed(double: SegmindDouble, make: Make) -> None:
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    double.next_poll(200, {"status": "COMPLETED", "metrics": {}})
    double.next_poll(422, {"status": "FAILED", "error": "content safety: output blocked"})
    status = await provider.poll(sub.job)
    assert status.state is ProviderState.FAILED and status.error is not None
    assert status.error.kind is ErrorKind.CONTENT_POLICY


# -- rate limits ------------------------------------------------------------------------------


def iso_in(seconds: float) -> str:
    return email.utils.formatdate(NOW + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-rate-limit-reset-at-utc": "2027-01-15T08:00:17Z"}, 17.0),
        ({"x-rate-limit-reset-at-utc": "2027-01-15T08:00:17"}, 17.0),
        ({"x-rate-limit-reset-at-utc": "2027-01-15T08:00:17.500+00:00"}, 17.5),
        ({"X-Rate-Limit-Reset-At-UTC": str(int(NOW) + 30)}, 30.0),
        ({"x-rate-limit-reset-at-utc": str(int(NOW * 1000) + 4500)}, 4.5),
        ({"x-rate-limit-reset-at-utc": iso_in(60)}, 60.0),
        ({"x-rate-limit-reset-at-utc": "12"}, 12.0),
        ({"x-rate-limit-reset-at-utc": "2027-01-15T07:59:00Z"}, 0.0),
        ({"x-rate-limit-reset-at-utc": "2099-01-01T00:00:00Z"}, 86400.0),
        ({"Retry-After": "5", "x-rate-limit-reset-at-utc": "2027-01-15T08:00:17Z"}, 5.0),
        ({"x-rate-limit-reset-at-utc": "soon"}, None),
        ({"x-rate-limit-reset-at-utc": "nan"}, None),
        ({}, None),
    ],
)
def test_rate_limit_reset_header(headers: dict[str, str], expected: float | None) -> None:
    assert reset_in_s(headers, NOW) == (pytest.approx(expected) if expected is not None else None)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(max_size=40), now=st.floats(min_value=0, max_value=4e9))
def test_reset_header_reader_never_raises(value: str, now: float) -> None:
    found = reset_in_s({"x-rate-limit-reset-at-utc": value}, now)
    assert found is None or 0.0 <= found <= 86400.0


# -- v1: the synchronous fallback ------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_do_not_fall_back_to_v1(
    double: SegmindDouble, make: Make, status: int
) -> None:
    double.next_create("status", status, {"error": "Internal server error"})
    with pytest.raises(ProviderError) as info:
        await make(route="auto").submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown
    assert double.creates == 1 and double.creates_of(V1) == []


@pytest.mark.parametrize("missing", [404, 405])
async def test_v2_without_the_model_falls_back_to_one_v1_call(
    double: SegmindDouble, make: Make, http: ProviderHttp, tmp_path: Path, missing: int
) -> None:
    double.v2_missing = missing
    provider = make(route="auto")
    sub = await provider.submit(PLAIN, webhook_url=None)
    assert len(double.creates_of(V2)) == 1 and len(double.creates_of(V1)) == 1
    assert double.creates == 2
    v2_create, v1_create = double.creates_of(V2)[0], double.creates_of(V1)[0]
    assert v1_create.json == v2_create.json
    assert v1_create.header("x-api-key") == API_KEY and v1_create.header("Authorization") is None
    clip = tmp_path / "segmind" / "segmind-v1-sg-req-000001.mp4"
    assert sub.job == ProviderJob("v1-sg-req-000001", {"api": "v1", "video_url": clip.as_uri()})
    assert sub.status.state is ProviderState.SUCCEEDED
    assert sub.status.video_url == clip.as_uri()
    # poll of a v1 job asks nothing and says the same
    before = len(double.requests)
    assert await provider.poll(sub.job) == sub.status
    assert len(double.requests) == before
    await download(
        http.session,
        sub.status.video_url,
        tmp_path / "out.mp4",
        max_bytes=10**7,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url], file_root=provider.files_dir),
    )
    assert (tmp_path / "out.mp4").read_bytes() == double.video_bytes
    # the adapter remembers: the next job goes straight to v1
    await provider.submit(PLAIN, webhook_url=None)
    assert len(double.creates_of(V2)) == 1 and len(double.creates_of(V1)) == 2


async def test_v2_mode_never_falls_back(double: SegmindDouble, make: Make) -> None:
    double.v2_missing = 404
    with pytest.raises(ProviderError) as info:
        await make(route="v2").submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.status_code == 404
    assert double.creates_of(V1) == []


@pytest.mark.parametrize(
    ("reply", "served_from_file"),
    [
        ("bytes", False),
        ("octet", False),
        ("base64", False),
        ("data_uri", False),
        ("output_url", True),
        ("video_url", True),
    ],
)
async def test_v1_sync_success_in_every_documented_form(
    double: SegmindDouble,
    make: Make,
    http: ProviderHttp,
    tmp_path: Path,
    reply: str,
    served_from_file: bool,
) -> None:
    double.v1_reply = reply
    double.v1_delay_s = 0.05  # the double takes a moment to render, like the real v1
    provider = make(route="v1")
    sub = await provider.submit(MULTI, webhook_url=None)
    [create] = double.creates_of(V1)
    assert create.json["multi_prompt"][1] == {
        "prompt": "The fox runs across a snowy field",
        "duration": "5",
    }
    assert double.creates_of(V2) == [] and double.creates == 1
    status = sub.status
    assert status.state is ProviderState.SUCCEEDED and status.video_url is not None
    job_id = next(iter(double.jobs))
    if served_from_file:
        assert status.video_url == double.file_url(job_id) and clips(tmp_path) == []
        assert sub.job.id == f"v1-{job_id}"
    else:
        [name] = clips(tmp_path)
        assert status.video_url == (tmp_path / "segmind" / name).as_uri()
        if reply == "octet":  # no x-request-id: the adapter names the job itself
            assert re.fullmatch(r"segmind-v1-[0-9a-f]{24}\.mp4", name)
        else:
            assert name == f"segmind-v1-{job_id}.mp4" and sub.job.id == f"v1-{job_id}"
    size = await download(
        http.session,
        status.video_url,
        tmp_path / "out.mp4",
        max_bytes=10**7,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url], file_root=provider.files_dir),
    )
    assert (tmp_path / "out.mp4").read_bytes() == double.video_bytes
    assert size == len(double.video_bytes)
    assert await provider.poll(sub.job) == status


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (406, {"error": "Insufficient credits"}, ErrorKind.OUT_OF_FUNDS),
        (400, {"error": "duration must be a string"}, ErrorKind.INVALID_INPUT),
        (422, {"status": "FAILED", "error": "NSFW content detected"}, ErrorKind.CONTENT_POLICY),
        (500, {"error": "Internal server error"}, ErrorKind.TRANSIENT),
        (503, "<html>Service Unavailable</html>", ErrorKind.TRANSIENT),
    ],
)
async def test_v1_errors_are_classified_and_save_nothing(
    double: SegmindDouble, make: Make, tmp_path: Path, status: int, body: Any, kind: ErrorKind
) -> None:
    double.next_create("status", status, body)
    with pytest.raises(ProviderError) as info:
        await make(route="v1").submit(PLAIN, webhook_url=None)
    assert info.value.kind is kind and info.value.status_code == status
    assert not info.value.outcome_unknown
    assert double.creates == 1 and clips(tmp_path) == []


async def test_v1_truncated_video_is_unknown_and_leaves_nothing(
    double: SegmindDouble, make: Make, tmp_path: Path
) -> None:
    double.v1_reply = "truncated"
    with pytest.raises(ProviderError) as info:
        await make(route="v1").submit(PLAIN, webhook_url=None)
    assert info.value.outcome_unknown
    assert clips(tmp_path) == [] and double.creates == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"output": "https://images.segm', "application/json"),
        (b'{"status": "COMPLETED"}', "application/json"),
        (b'{"video": "not base64 at all!"}', "application/json"),
        (b'{"video": "aGVsbG8gd29ybGQsIG5vdCBhIHZpZGVv"}', "application/json"),
        (b"[]", "application/json"),
        (b"<html>maintenance</html>", "text/html"),
    ],
)
async def test_v1_unreadable_reply_is_unknown(
    double: SegmindDouble, make: Make, tmp_path: Path, body: bytes, content_type: str
) -> None:
    double.next_create("status", 200, body, {"Content-Type": content_type})
    with pytest.raises(ProviderError) as info:
        await make(route="v1").submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown
    assert clips(tmp_path) == []


async def test_v1_old_clips_are_pruned(double: SegmindDouble, make: Make, tmp_path: Path) -> None:
    folder = tmp_path / "segmind"
    folder.mkdir()
    old, fresh = folder / "segmind-v1-old.mp4", folder / "segmind-v1-fresh.mp4"
    for path in (old, fresh):
        path.write_bytes(b"x")
    os.utime(old, (NOW - 2 * 86400, NOW - 2 * 86400))
    os.utime(fresh, (NOW - 3600, NOW - 3600))
    await make(route="v1", now_s=NOW).submit(PLAIN, webhook_url=None)
    assert clips(tmp_path) == ["segmind-v1-fresh.mp4", "segmind-v1-sg-req-000001.mp4"]


def v1_adapter(double: SegmindDouble, http: ProviderHttp, **extra: Any) -> SegmindProvider:
    settings = SegmindSettings(api_key=SecretStr(API_KEY), base_url=double.base_url, api_mode="v1")
    return SegmindProvider(settings, http, **extra)


async def test_v1_unwritable_work_dir_is_a_provider_error(
    double: SegmindDouble, http: ProviderHttp, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    provider = v1_adapter(double, http, work_dir=blocker / "sub")
    try:
        with pytest.raises(ProviderError) as info:
            await provider.submit(PLAIN, webhook_url=None)
        assert info.value.kind is ErrorKind.UNKNOWN and info.value.outcome_unknown
        assert "cannot save the v1 clip" in info.value.detail
    finally:
        await provider.close()


async def test_v1_default_work_dir_is_a_private_temp_dir(
    double: SegmindDouble, http: ProviderHttp
) -> None:
    provider = v1_adapter(double, http)
    try:
        sub = await provider.submit(PLAIN, webhook_url=None)
        folder = provider.work_dir
        assert folder.name.startswith("klingbot-segmind-")
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        assert sub.status.video_url == (folder / "segmind-v1-sg-req-000001.mp4").resolve().as_uri()
    finally:
        await provider.close()
        shutil.rmtree(provider.work_dir, ignore_errors=True)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=json_values
    | status_like
    | st.dictionaries(
        st.sampled_from(["video", "output", "data", "image"]),
        st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
        | st.binary(max_size=40).map(
            lambda b: base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + b).decode()
        )
        | json_values,
    )
)
def test_v1_reply_reader_only_raises_provider_error(data: Any) -> None:
    with contextlib.suppress(ProviderError):
        url, video = read_v1_json(data)
        assert (url is None) != (video is None)


# -- webhooks --------------------------------------------------------------------------------


def test_segmind_sends_no_webhooks() -> None:
    assert CAPABILITIES["segmind"].webhooks == "none"
    body = json.dumps({"request_id": "sg-1", "status": "COMPLETED"}).encode()
    with pytest.raises(WebhookParseError) as info:
        parser().parse_webhook({"Content-Type": "application/json"}, body)
    assert str(info.value) == "Segmind does not send webhooks" and info.value.http_status == 400

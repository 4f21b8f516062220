"""The smaller boundary fixes: report CSV cells cannot start a formula, a vendor's wait is
bounded, the database and clips are the bot user's only, EachLabs webhooks are always signed,
and a deleted clip's link stops working."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.pipeline.moderation import FORMULA_STARTS, Moderation, csv_cell
from bot.providers import ProviderHttp, VideoProvider, WebhookAuthError
from bot.providers.eachlabs import EachLabsProvider
from bot.providers.errors import MAX_RETRY_AFTER_S, ErrorKind, ProviderError
from bot.providers.http import retry_after_s
from bot.runtime import open_runtime
from bot.settings import EachLabsSettings, Settings
from storage import Database, JobState
from tests.pipeline_support import RecordingSink, member, pipeline
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble
from tests.provider_support import NO_HTTP

REQUEST = {"prompt": "a red fox running through snow", "duration_s": 5}


@pytest.fixture
async def double() -> AsyncIterator[EachLabsDouble]:
    async with EachLabsDouble() as d:
        yield d


def eachlabs(
    double: EachLabsDouble, secret: str | None = None
) -> Callable[[ProviderHttp], dict[str, VideoProvider]]:
    def build(http: ProviderHttp) -> dict[str, VideoProvider]:
        settings = EachLabsSettings(
            api_key=SecretStr(API_KEY),
            base_url=double.api_base,
            webhook_secret=SecretStr(secret) if secret else None,
        )
        return {"eachlabs": EachLabsProvider(settings, http)}

    return build


# -- /pool report CSV ------------------------------------------------------------------------------


async def test_report_csv_cells_cannot_start_a_formula(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        moderation = Moderation(p.service)
        await moderation.fund(1, 100, actor_id=9, reason="@SUM(1+1)*cmd|' /C calc'!A0", key="f")
        await moderation.grant(1, 7, 10, actor_id=9, reason='=HYPERLINK("http://x","y")', key="g")
        pattern = "+cmd|' /C notepad'!A0"
        await p.service.policy.add_block(1, pattern, is_regex=False, actor_id=9)
        await p.service.policy.remove_block(1, pattern, actor_id=9)
        await p.service.policy.record(1, actor_id=9, action="note", detail="-2+3", reason="\tx")
        report = await moderation.report(1, 0, p.clock.now_ms() + 1)
    rows = list(csv.reader(io.StringIO(report.events_csv)))
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c.startswith(FORMULA_STARTS)]
    for original in (pattern, '=HYPERLINK("http://x","y")', "-2+3", "\tx"):
        assert "'" + original in cells  # shown as text, nothing lost
    usage = list(csv.reader(io.StringIO(report.usage_csv)))
    assert usage[-1][0] == "TOTAL" and usage[1][0] == "7"


@settings(max_examples=300)
@given(st.text(max_size=30) | st.integers())
def test_a_csv_cell_never_starts_a_formula(value: str | int) -> None:
    cell = csv_cell(value)
    if isinstance(value, int):
        assert cell == value
        return
    assert isinstance(cell, str) and not cell.startswith(FORMULA_STARTS)
    assert cell == value or cell == "'" + value


# -- Retry-After -----------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["1e12", "inf", "99999999999999999999"])
async def test_a_huge_retry_after_pauses_a_provider_for_at_most_ten_minutes(
    tmp_path: Path, double: EachLabsDouble, retry_after: str
) -> None:
    double.next_create(
        "status", 429, {"status": "error", "message": "Rate limit"}, {"Retry-After": retry_after}
    )
    async with pipeline(tmp_path, eachlabs(double), default_provider="eachlabs", public=False) as p:
        await p.ledger.issue_to_member(1, 7, 100, key="seed")
        await p.service.submit(member(), REQUEST)
        rate = p.service.create_rate("eachlabs")
        for _ in range(2000):
            if rate.throttles:
                break
            await asyncio.sleep(0.01)
        assert rate.throttles == 1
        assert 0 < rate.paused_for_s <= MAX_RETRY_AFTER_S


@settings(max_examples=300)
@given(
    headers=st.dictionaries(
        st.sampled_from(["Retry-After", "retry-after", "X-RateLimit-Reset", "x"]),
        st.text(max_size=40)
        | st.floats(allow_nan=True, allow_infinity=True).map(str)
        | st.integers().map(str),
    ),
    text=st.text(max_size=60) | st.floats().map(lambda f: f"retry after {f} s"),
)
def test_any_retry_after_is_none_or_bounded(headers: dict[str, str], text: str) -> None:
    wait = retry_after_s(headers, text, now_s=1_800_000_000)
    assert wait is None or 0 <= wait <= MAX_RETRY_AFTER_S
    error = ProviderError(ErrorKind.RATE_LIMITED, retry_after_s=float("inf"))
    assert error.retry_after_s == MAX_RETRY_AFTER_S


# -- file modes ------------------------------------------------------------------------------------


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """A permissive umask, as on a typical host outside Docker."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_database_and_clips_are_readable_by_the_bot_user_only(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        db_path=tmp_path / "data" / "klingbot.db",
        media_dir=tmp_path / "data" / "media",
        http_host="127.0.0.1",
        http_port=0,
        local={"render_s": 0},
    )
    with umask(0o022):
        async with open_runtime(settings, delivery=RecordingSink(tmp_path / "out")) as runtime:
            await runtime.start()
            await runtime.service.ledger.issue_to_member(1, 7, 100, key="seed")
            receipt = await runtime.service.submit(member(), {"prompt": "a fox", "duration_s": 3})
            for _ in range(3000):
                job = await runtime.service.jobs.get(receipt.job.id)
                if job.state is JobState.DELIVERED:
                    break
                await asyncio.sleep(0.01)
            assert job.state is JobState.DELIVERED
            clip = runtime.service.media.clip_path(job.id)
            media = settings.media_dir
            assert mode(tmp_path / "data" / "klingbot.db") == 0o600
            assert mode(tmp_path / "data" / "klingbot.db-wal") == 0o600
            assert mode(tmp_path / "data") == 0o700
            assert mode(media) == 0o700 and mode(clip.parent) == 0o700
            assert mode(clip) == 0o600


async def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with umask(0o022):
        db = await Database.open(path)
        await db.close()
        path.chmod(0o644)
        db = await Database.open(path)
        await db.check_writable()
        assert mode(path) == 0o600 and mode(tmp_path / "old.db-wal") == 0o600
        await db.close()


# -- EachLabs webhooks are always signed -----------------------------------------------------------


async def test_eachlabs_webhooks_are_verified_without_a_configured_secret(
    tmp_path: Path, double: EachLabsDouble
) -> None:
    async with pipeline(
        tmp_path, eachlabs(double), default_provider="eachlabs", poll_initial_s=30, poll_max_s=30
    ) as p:
        await p.ledger.issue_to_member(1, 7, 100, key="seed")
        receipt = await p.service.submit(member(), REQUEST)
        for _ in range(2000):
            if double.jobs:
                break
            await asyncio.sleep(0.01)
        vendor_job = next(iter(double.jobs.values()))
        secret = vendor_job.request.get("webhook_secret")
        assert isinstance(secret, str) and len(secret) == 64  # sent with the create
        vendor_job.script = ["succeeded"]
        body = double.webhook_body(vendor_job)
        url = f"{p.url}/webhooks/eachlabs/{receipt.job.webhook_token}"
        async with p.session.post(
            url, data=body, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 401  # unsigned
        forged = double.sign("a-guess", body, int(time.time()))
        async with p.session.post(url, data=body, headers=forged) as r:
            assert r.status == 401
        assert await double.send_webhook(vendor_job) == 200  # signed as the vendor signs
        await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
    restarted = EachLabsProvider(EachLabsSettings(api_key=SecretStr(API_KEY)), NO_HTTP)
    signed = double.sign(secret, body, int(time.time()))
    assert restarted.parse_webhook(signed, body).provider_job_id == vendor_job.id
    other_key = EachLabsProvider(EachLabsSettings(api_key=SecretStr("another-key")), NO_HTTP)
    with pytest.raises(WebhookAuthError):
        other_key.parse_webhook(signed, body)


# -- a deleted clip's link -------------------------------------------------------------------------


async def test_a_retired_clip_link_answers_404(tmp_path: Path, double: EachLabsDouble) -> None:
    async with pipeline(tmp_path, eachlabs(double, "whsec-x"), default_provider="eachlabs") as p:
        await p.ledger.issue_to_member(1, 7, 100, key="seed")
        receipt = await p.service.submit(member(), REQUEST)
        job = await p.wait_for_state(receipt.job.id, JobState.DELIVERED)
        link = p.service.media.link(job)
        assert link is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(link) as response:
                assert response.status == 200
            retired = await p.service.retire_media(job.id)
            async with session.get(link) as response:
                assert response.status == 404
        assert retired.media_retired_at_ms is not None
        assert not p.service.media.clip_path(job.id).exists()
        assert p.service.media.link(retired) is None
        again = await p.service.retire_media(job.id)
        assert again.media_retired_at_ms == retired.media_retired_at_ms
        assert again.state is JobState.DELIVERED  # the job itself is kept

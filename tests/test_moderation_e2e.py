"""Moderated shared quotas end to end: owners fund, moderators set rules, members draw."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bot.pipeline import day_start_ms
from bot.playground.double import DiscordDouble
from bot.settings import EachLabsSettings
from storage import AccountRef, JobState
from tests.e2e_support import (
    ALICE,
    BOB,
    CHANNEL,
    GUILD,
    LOG_CHANNEL,
    MANAGE_GUILD,
    MOD,
    OWNER,
    VIP_ROLE,
    Running,
    make_double,
    make_settings,
    reply_text,
    running_bot,
)
from tests.provider_doubles.eachlabs import API_KEY, EachLabsDouble

ADMINISTRATOR = 1 << 3  # Discord's permission bit
GUILD_CONTEXT = 0  # Discord's interaction context "in a server"


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    d = await make_double()
    yield d
    await d.stop()


async def command(
    run: Running, name: str, sub: str, user_id: int, group: str | None = None, **options: Any
) -> Any:
    inter = await run.double.invoke(
        name,
        options or None,
        sub=sub,
        group=group,
        user_id=user_id,
        guild_id=GUILD,
        channel_id=CHANNEL,
    )
    await reply_text(inter)  # the command's work is done (a deferred one answers afterwards)
    return inter


async def video(run: Running, user_id: int, **options: Any) -> str:
    return await reply_text(await run.video(user_id=user_id, **options))


async def test_pool_caps_roles_freeze_blocklist(tmp_path: Path, double: DiscordDouble) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        funded = await command(run, "klingadmin", "fund", OWNER, credits=1000)
        assert "now has 1000 available" in await reply_text(funded)
        await command(run, "pool", "logchannel", MOD, channel=LOG_CHANNEL)
        capped = await command(run, "pool", "cap", MOD, credits=50)
        assert "50 credits" in await reply_text(capped)
        # alice has no credits of her own: 3 s videos (24 credits) come from the pool, up to 50/day
        assert "the server pool" in await video(run, ALICE, duration=3)
        assert "the server pool" in await video(run, ALICE, duration=3)
        refused = await video(run, ALICE, duration=3)
        reset_s = (day_start_ms(run.clock.now_ms()) + 86_400_000) // 1000
        assert "used 48 of your 50 daily credits" in refused and f"<t:{reset_s}:R>" in refused
        # the VIP role gets a bigger allowance
        await command(run, "pool", "cap", MOD, credits=100, role=VIP_ROLE)
        for _ in range(4):
            assert "the server pool" in await video(run, BOB, duration=3)
        assert "used 96 of your 100 daily credits" in await video(run, BOB, duration=3)
        # frozen members are refused
        await command(run, "pool", "freeze", MOD, member=BOB, reason="spamming")
        assert "paused your video requests" in await video(run, BOB, duration=3)
        await command(run, "pool", "unfreeze", MOD, member=BOB)
        # blocklisted words, in any case and with accents
        await command(run, "pool", "add", MOD, group="blocklist", pattern="gore")
        await command(run, "pool", "add", MOD, group="blocklist", pattern=r"bl(oo)+d", regex=True)
        held_before = (await run.service.ledger.balance(AccountRef.pool(GUILD))).pending
        for prompt in ("a GÖRE scene", "Gore everywhere", "so much BLOOOOD"):
            assert "does not allow" in await video(run, BOB, duration=3, prompt=prompt)
        assert "does not allow" not in await video(run, BOB, duration=3, prompt="gorefree meadow")
        assert (await run.service.ledger.balance(AccountRef.pool(GUILD))).pending == held_before
        # everything was logged in the log channel
        log = "\n".join(m.content for m in double.messages(LOG_CHANNEL))
        assert "set the daily pool cap for each member to 50" in log and "froze" in log
        assert (await run.service.ledger.audit()).ok


async def test_blocklist_regex_refused_with_its_reason_or_kept_as_written(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        for pattern, reason in [
            (r"(gore)\1", "backreferences"),
            (r"gore(?!free)", "lookahead"),
            ("gore\\ ", "trailing \\"),  # checked as saved: without the space
            ("x*", "empty prompt"),
        ]:
            added = await command(
                run, "pool", "add", MOD, group="blocklist", pattern=pattern, regex=True
            )
            assert reason in await reply_text(added)
        assert (await run.service.policy.get(GUILD)).blocklist == ()
        added = await command(
            run, "pool", "add", MOD, group="blocklist", pattern=r"gore\W", regex=True
        )
        assert "are refused" in await reply_text(added)
        assert "does not allow" in await video(run, ALICE, duration=3, prompt="so much GORE!")
        passed = await video(run, ALICE, duration=3, prompt="gores")  # on to the credit check
        assert "does not allow" not in passed and "credits" in passed


async def test_non_moderator_is_refused_even_if_discord_shows_the_command(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await command(run, "klingadmin", "fund", OWNER, credits=500)
        grant = await command(run, "pool", "grant", ALICE, member=ALICE, amount=100)
        assert "Only moderators" in await reply_text(grant)
        fund = await command(run, "klingadmin", "fund", MOD, credits=500)
        assert "Only the bot's owners" in await reply_text(fund)
        assert await run.available(ALICE) == 0
        granted = await command(
            run, "pool", "grant", MOD, member=ALICE, amount=100, reason="contest"
        )
        assert "granted 100 credits" in await reply_text(granted)
        assert await run.available(ALICE) == 100
        revoked = await command(run, "pool", "revoke", MOD, member=ALICE, amount=30)
        assert (
            "took 30 credits back" in await reply_text(revoked) and await run.available(ALICE) == 70
        )


async def test_moderator_commands_are_shown_only_to_moderators_and_only_in_servers(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)):
        synced = {c["name"]: c for c in double.commands(GUILD)}
    hidden = {"pool": MANAGE_GUILD, "klingadmin": ADMINISTRATOR}
    for name, permissions in hidden.items():
        # discord.py sends the bit set as a number; Discord's documents show it as a string
        assert synced[name]["default_member_permissions"] in (permissions, str(permissions)), name
        assert synced[name]["contexts"] == [GUILD_CONTEXT], name
    members = sorted(set(synced) - set(hidden))
    assert members == ["Animate", "animate", "credits", "jobs", "multishot", "queue", "video"]
    assert [synced[n]["default_member_permissions"] for n in members] == [None] * len(members)


async def test_approval_wait_approve_deliver_and_deny_holds_nothing(
    tmp_path: Path, double: DiscordDouble
) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await command(run, "klingadmin", "fund", OWNER, credits=1000)
        await command(run, "pool", "logchannel", MOD, channel=LOG_CHANNEL)
        await command(run, "pool", "approval", MOD, credits=30)
        assert "moderator has to approve" in await video(run, ALICE, duration=5)
        job = await run.only_job()
        assert job.state is JobState.AWAITING_APPROVAL and job.hold_id is None
        assert (await run.service.ledger.balance(AccountRef.pool(GUILD))).pending == 0
        request = await double.wait_for_message(
            LOG_CHANNEL, lambda m: bool(m.embeds) and "Approval" in m.embeds[0]["title"]
        )
        not_mod = await double.click(
            request.id, f"kb:approve:{job.id}", user_id=BOB, guild_id=GUILD, channel_id=LOG_CHANNEL
        )
        await not_mod.wait_ack()
        assert "Only moderators" in await reply_text(not_mod)
        approve = await double.click(
            request.id, f"kb:approve:{job.id}", user_id=MOD, guild_id=GUILD, channel_id=LOG_CHANNEL
        )
        await approve.wait_ack()
        delivered = await run.wait_state(job.id, JobState.DELIVERED)
        assert delivered.payer == "pool"
        assert [t.kind.value for t in await run.service.ledger.transfers_for_job(job.id)] == [
            "pending",
            "post",
        ]
        assert (
            "Approved by"
            in next(m for m in double.messages(LOG_CHANNEL) if m.id == request.id).content
        )
        # a second request is declined: nothing was held, so nothing is refunded
        await video(run, BOB, duration=5, prompt="an expensive fox")
        second = await run.only_job(BOB)
        request2 = await double.wait_for_message(
            LOG_CHANNEL, lambda m: bool(m.embeds) and second.id in m.embeds[0]["footer"]["text"]
        )
        deny = await double.click(
            request2.id, f"kb:deny:{second.id}", user_id=MOD, guild_id=GUILD, channel_id=LOG_CHANNEL
        )
        await deny.wait_ack()
        assert deny.modal is not None
        answer = await double.submit_modal(
            deny, deny.modal["custom_id"], {"reason": "too expensive today"}, user_id=MOD
        )
        await answer.wait_ack()
        rejected = await run.wait_state(second.id, JobState.REJECTED)
        assert rejected.error_message == "A moderator declined it: too expensive today"
        assert await run.service.ledger.transfers_for_job(second.id) == []
        await double.wait_for(
            lambda: (
                "Not approved"
                in next(m for m in double.messages(LOG_CHANNEL) if m.id == request2.id).content
            )
        )
        events = [e.action for e in await run.service.policy.events(GUILD)]
        assert "approve" in events and "deny" in events


async def test_approvals_lapse(tmp_path: Path, double: DiscordDouble) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await command(run, "klingadmin", "fund", OWNER, credits=1000)
        await command(run, "pool", "approval", MOD, credits=30, hours=1)
        await video(run, ALICE, duration=5)
        job = await run.only_job()
        run.clock.advance(seconds=3601)  # type: ignore[attr-defined]
        assert await run.service.lapse_approvals() == 1
        lapsed = await run.service.jobs.get(job.id)
        assert lapsed.state is JobState.REJECTED and "No moderator answered within 1 h" in (
            lapsed.error_message or ""
        )


async def test_report_totals_equal_the_ledger(tmp_path: Path, double: DiscordDouble) -> None:
    async with running_bot(double, make_settings(tmp_path)) as run:
        await command(run, "klingadmin", "fund", OWNER, credits=1000)
        await command(run, "pool", "grant", MOD, member=ALICE, amount=100, reason="welcome")
        await command(run, "pool", "revoke", MOD, member=ALICE, amount=10)
        await video(run, ALICE, duration=5)
        await video(run, BOB, duration=3)
        for job in await run.service.jobs.by_user(GUILD, ALICE) + await run.service.jobs.by_user(
            GUILD, BOB
        ):
            await run.wait_state(job.id, JobState.DELIVERED)
        [alice_job] = await run.service.jobs.by_user(GUILD, ALICE)
        await command(
            run, "klingadmin", "refund", OWNER, job=alice_job.id, credits=15, reason="glitch"
        )
        report = await command(run, "pool", "report", MOD, days=1)
        await report.wait_ack()
        followup = await report.wait_for_followup()
        assert followup.message_id is not None
        files = {
            a.filename: a.read().decode() for a in double.message(followup.message_id).attachments
        }
        rows = list(csv.DictReader(io.StringIO(files["klingbot-usage-1d.csv"])))
        total = next(r for r in rows if r["user_id"] == "TOTAL")
        transfers = await run.service.db.fetchall(
            "SELECT t.*, a.kind AS debit_kind FROM transfers t JOIN accounts a ON a.id = t.debit_account_id"
            " WHERE t.guild_id = ?",
            (GUILD,),
        )
        captured = {
            k: sum(t["amount"] for t in transfers if t["kind"] == "post" and t["debit_kind"] == k)
            for k in ("member", "pool")
        }
        singles = {
            r: sum(t["amount"] for t in transfers if t["kind"] == "single" and t["reason"] == r)
            for r in ("grant", "revoke", "refund")
        }
        assert int(total["credits_spent_own"]) == captured["member"] == 40
        assert int(total["credits_spent_pool"]) == captured["pool"] == 24
        assert int(total["credits_granted"]) == singles["grant"] == 100
        assert int(total["credits_revoked"]) == singles["revoke"] == 10
        assert int(total["credits_refunded"]) == singles["refund"] == 15
        assert int(total["jobs_delivered"]) == 2
        per_member = {r["user_id"]: r for r in rows}
        assert (
            per_member[str(ALICE)]["credits_spent_own"] == "40"
            and per_member[str(BOB)]["credits_spent_pool"] == "24"
        )
        moderation = files["klingbot-moderation-1d.csv"]
        assert (
            "grant" in moderation
            and "welcome" in moderation
            and "refund" in moderation
            and "glitch" in moderation
        )


async def test_two_hundred_members_three_videos_each_never_overdraw(tmp_path: Path) -> None:
    """Credit invariants under a 600-request burst (acknowledgement speed is test_discord_e2e's
    and bench/interactions.py's subject, so the double allows 10 s here)."""
    double = await make_double(ack_deadline_s=10)
    try:
        await _two_hundred_members(tmp_path, double)
    finally:
        await double.stop()


async def _two_hundred_members(tmp_path: Path, double: DiscordDouble) -> None:
    members = [ALICE + 10_000 + n for n in range(200)]
    for member in members:
        double.add_member(GUILD, member, f"m{member}")
    async with EachLabsDouble() as vendor:
        vendor.default_script = ["created", "processing"]
        settings = make_settings(
            tmp_path,
            provider="eachlabs",
            eachlabs=EachLabsSettings(
                api_key=SecretStr(API_KEY), base_url=vendor.api_base, max_concurrent=10
            ),
        )
        async with running_bot(double, settings) as run:
            await reply_text(await command(run, "klingadmin", "fund", OWNER, credits=7_200))
            # two 24-credit videos a day each would need 9,600: the pool (300 videos) runs out first
            await reply_text(await command(run, "pool", "cap", MOD, credits=50))
            inters = await asyncio.gather(
                *(
                    run.video(user_id=m, duration=3, prompt=f"fox {n}")
                    for m in members
                    for n in range(3)
                )
            )
            texts = await asyncio.gather(*(reply_text(i, 60) for i in inters))
            accepted = sum("held from the server pool" in t for t in texts)
            capped = sum("of your 50 daily credits" in t for t in texts)
            short = sum("needs 24 credits but only" in t for t in texts)
            assert accepted + capped + short == 600
            assert accepted == 7_200 // 24 and short > 0
            since = day_start_ms(run.clock.now_ms())
            for member in members:
                assert await run.service.ledger.drawn_from_pool(GUILD, member, since) <= 50
            pool = await run.service.ledger.balance(AccountRef.pool(GUILD))
            assert pool.available == 0 and pool.pending == 7_200
            assert (await run.service.ledger.audit()).ok


async def test_read_only_database_fails_closed(tmp_path: Path, double: DiscordDouble) -> None:
    async with EachLabsDouble() as vendor:
        settings = make_settings(
            tmp_path,
            provider="eachlabs",
            eachlabs=EachLabsSettings(api_key=SecretStr(API_KEY), base_url=vendor.api_base),
        )
        async with running_bot(double, settings) as run:
            await run.fund(ALICE, 200)
            # what SQLite does when the file becomes read-only under a running process
            await run.service.db.set_query_only(True)
            text = await video(run, ALICE, duration=5)
            assert "database can't be written" in text and "nothing was charged" in text
            assert vendor.creates == 0
            assert await run.service.jobs.by_user(GUILD, ALICE) == []
            await run.service.db.set_query_only(False)
            assert await run.available(ALICE) == 200

"""The playground's scenario, built in a real (started) Discord double."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.playground.double import DiscordDouble, DoubleUsageError
from bot.playground.double.model import ATTACH_FILES, MANAGE_GUILD, MIB, SEND_MESSAGES
from bot.playground.scenario import PLAYGROUND, Scenario, build_world, make_double


@pytest.fixture
async def double() -> AsyncIterator[DiscordDouble]:
    async with make_double(PLAYGROUND, token="t") as d:
        build_world(d, PLAYGROUND)
        yield d


def test_ids_are_unique_snowflakes() -> None:
    s: Scenario = PLAYGROUND
    ids = [s.app_id, s.bot_id]
    ids += [g.id for g in s.guilds] + [p.id for p in s.people]
    ids += [c.id for g in s.guilds for c in g.channels] + [r.id for g in s.guilds for r in g.roles]
    assert len(set(ids)) == len(ids)
    assert all(10**17 <= i < 1 << 63 for i in ids)  # snowflake-sized
    assert s.person(s.default_person_id).role == "member"
    assert {p.role for p in s.people} == {"owner", "moderator", "member"}


async def test_world_has_the_servers_people_and_permissions(double: DiscordDouble) -> None:
    world = double.world
    owner, moderator, member = (PLAYGROUND.person(p.id) for p in PLAYGROUND.people)
    assert [g.name for g in world.guilds.values()] == ["Playground", "Second server"]
    for spec in PLAYGROUND.guilds:
        guild = world.guilds[spec.id]
        assert guild.owner_id == owner.id
        assert {p.id for p in PLAYGROUND.people} <= set(guild.members)
        assert world.member_permissions(guild, moderator.id) & MANAGE_GUILD
        assert not world.member_permissions(guild, member.id) & MANAGE_GUILD
        for channel in spec.channels:
            stored = world.channels[channel.id]
            bot_bits = world.app_permissions(stored) & (SEND_MESSAGES | ATTACH_FILES)
            assert bot_bits == (SEND_MESSAGES | ATTACH_FILES if channel.bot_can_post else 0)
            assert world.channel_permissions(stored, member.id) & SEND_MESSAGES
    assert world.users[member.id].global_name == "Sam"
    assert world.users[owner.id].global_name == "Olivia"
    limits = {
        c.name: world.filesize_limit(c)
        for c in world.guilds[PLAYGROUND.guilds[0].id].channels.values()
    }
    assert limits == {
        "general": 10 * MIB,
        "small-uploads": 1 * MIB,
        "read-only": 10 * MIB,
        "mod-log": 10 * MIB,
    }
    with pytest.raises(DoubleUsageError, match="exists already"):
        build_world(double, PLAYGROUND)  # a world is built once

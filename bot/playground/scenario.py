"""The playground's world: two servers, their channels and roles, and three people.

`PLAYGROUND` is the one the playground starts with; `build_world(double, scenario)` creates it in
a `DiscordDouble`. Ids are fixed snowflakes, so a restarted playground (same database) finds the
same servers, people and pools again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.playground.double import DiscordDouble
from bot.playground.double.model import ATTACH_FILES, MANAGE_GUILD, MIB, SEND_MESSAGES

PersonRole = Literal["owner", "moderator", "member"]


@dataclass(frozen=True)
class ChannelSpec:
    """A text channel. `upload_limit_bytes`: None for the server's limit, else a smaller one
    for this channel; `bot_can_post` False puts an overwrite on it that denies the bot Send
    Messages and Attach Files."""

    id: int
    name: str
    upload_limit_bytes: int | None = None
    bot_can_post: bool = True
    topic: str | None = None


@dataclass(frozen=True)
class RoleSpec:
    """A server role with its permission bits, given to the people whose role is listed."""

    id: int
    name: str
    permissions: int
    given_to: tuple[PersonRole, ...] = ()


@dataclass(frozen=True)
class GuildSpec:
    """A server the bot is in; `owner_id` owns it (every permission). `log_channel_id` is set
    as the bot's log channel (/pool logchannel); `starting_pool_credits` are issued into its
    pool once, on the first start with a database."""

    id: int
    name: str
    owner_id: int
    channels: tuple[ChannelSpec, ...]
    roles: tuple[RoleSpec, ...] = ()
    log_channel_id: int | None = None
    starting_pool_credits: int = 0


@dataclass(frozen=True)
class PersonSpec:
    """Someone in every server of the scenario; `name` is their display name."""

    id: int
    name: str
    role: PersonRole

    @property
    def username(self) -> str:
        return "".join(c for c in self.name.lower() if c.isalnum())


@dataclass(frozen=True)
class Scenario:
    """Everything the playground's Discord holds at start. The owner (role "owner") owns every
    server and is a bot owner (KLINGBOT_OWNER_IDS) too."""

    guilds: tuple[GuildSpec, ...]
    people: tuple[PersonSpec, ...]
    default_person_id: int
    app_id: int
    bot_id: int
    bot_name: str = "klingbot"

    @property
    def owner(self) -> PersonSpec:
        return next(p for p in self.people if p.role == "owner")

    def person(self, person_id: int) -> PersonSpec:
        for person in self.people:
            if person.id == person_id:
                return person
        raise KeyError(f"no person {person_id} in the scenario")

    def guild(self, guild_id: int) -> GuildSpec:
        for guild in self.guilds:
            if guild.id == guild_id:
                return guild
        raise KeyError(f"no server {guild_id} in the scenario")


APP_ID = 1_100_000_000_000_000_001
BOT_ID = 1_100_000_000_000_000_002
PLAYGROUND_GUILD = 1_110_000_000_000_000_001
SECOND_GUILD = 1_110_000_000_000_000_002
GENERAL = 1_120_000_000_000_000_001
SMALL_UPLOADS = 1_120_000_000_000_000_002
READ_ONLY = 1_120_000_000_000_000_003
MOD_LOG = 1_120_000_000_000_000_004
SECOND_GENERAL = 1_120_000_000_000_000_011
OWNER = 1_130_000_000_000_000_001
MODERATOR = 1_130_000_000_000_000_002
MEMBER = 1_130_000_000_000_000_003
MODERATORS_ROLE = 1_140_000_000_000_000_001
SECOND_MODERATORS_ROLE = 1_140_000_000_000_000_011

PLAYGROUND = Scenario(
    guilds=(
        GuildSpec(
            id=PLAYGROUND_GUILD,
            name="Playground",
            owner_id=OWNER,
            channels=(
                ChannelSpec(GENERAL, "general", topic="Try /video here"),
                ChannelSpec(
                    SMALL_UPLOADS,
                    "small-uploads",
                    upload_limit_bytes=1 * MIB,
                    topic="Uploads up to 1 MiB: clips are re-encoded to fit",
                ),
                ChannelSpec(
                    READ_ONLY,
                    "read-only",
                    bot_can_post=False,
                    topic="The bot may not post here",
                ),
                ChannelSpec(MOD_LOG, "mod-log", topic="The bot's log channel"),
            ),
            roles=(RoleSpec(MODERATORS_ROLE, "Moderators", MANAGE_GUILD, ("moderator",)),),
            log_channel_id=MOD_LOG,
            starting_pool_credits=1_000,
        ),
        GuildSpec(
            id=SECOND_GUILD,
            name="Second server",
            owner_id=OWNER,
            channels=(ChannelSpec(SECOND_GENERAL, "general"),),
            roles=(RoleSpec(SECOND_MODERATORS_ROLE, "Moderators", MANAGE_GUILD, ("moderator",)),),
        ),
    ),
    people=(
        PersonSpec(OWNER, "Olivia", "owner"),
        PersonSpec(MODERATOR, "Marco", "moderator"),
        PersonSpec(MEMBER, "Sam", "member"),
    ),
    default_person_id=MEMBER,
    app_id=APP_ID,
    bot_id=BOT_ID,
)


def make_double(scenario: Scenario, *, token: str, ack_deadline_s: float = 3.0) -> DiscordDouble:
    """A double for `scenario` (not started; the owner owns the application)."""
    return DiscordDouble(
        app_id=scenario.app_id,
        bot_user_id=scenario.bot_id,
        token=token,
        ack_deadline_s=ack_deadline_s,
        app_owner_id=scenario.owner.id,
        bot_name=scenario.bot_name,
    )


def build_world(double: DiscordDouble, scenario: Scenario) -> None:
    """Create the scenario's people, servers, roles, channels and overwrites in `double`."""
    for person in scenario.people:
        double.add_user(person.id, person.username, global_name=person.name)
    for guild in scenario.guilds:
        double.add_guild(guild.id, name=guild.name, owner_id=guild.owner_id)
        for role in guild.roles:
            double.add_role(guild.id, role.id, role.name, role.permissions)
        for person in scenario.people:
            roles = [r.id for r in guild.roles if person.role in r.given_to]
            double.add_member(guild.id, person.id, person.username, roles=roles)
        for channel in guild.channels:
            double.add_channel(
                guild.id,
                channel.id,
                channel.name,
                topic=channel.topic,
                upload_limit_bytes=channel.upload_limit_bytes,
            )
            if not channel.bot_can_post:
                double.set_permission_overwrite(
                    channel.id, scenario.bot_id, deny=SEND_MESSAGES | ATTACH_FILES
                )

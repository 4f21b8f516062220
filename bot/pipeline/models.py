"""The plain values the pipeline takes and returns (no discord.py objects)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.request import VideoRequest
from storage import Job


@dataclass(frozen=True)
class Requester:
    """Who asks, from where. `charge=False` is for operator jobs (the CLI)."""

    guild_id: int = 0
    channel_id: int = 0
    user_id: int = 0
    role_ids: frozenset[int] = frozenset()
    interaction_id: int | None = None
    upload_limit_bytes: int | None = None
    is_moderator: bool = False
    charge: bool = True


@dataclass(frozen=True)
class Receipt:
    """What a submission produced: the job, its price, who pays, what is left."""

    job: Job
    cost: int
    payer: str
    available_after: int
    replayed: bool = False


@dataclass(frozen=True)
class Quote:
    request: VideoRequest
    provider: str
    cost: int


@dataclass(frozen=True)
class ProviderIncident:
    """A provider refused creates (no funds, bad key, or down); jobs moved to another."""

    provider: str
    kind: str
    detail: str
    moved_to: str
    guild_id: int


@dataclass(frozen=True)
class Actor:
    """Who acts on an existing job, and from which server. Every job action checks that the
    server is the job's own (bot owners excepted), so a moderator of one server can never touch
    another server's jobs."""

    user_id: int
    guild_id: int = 0
    is_moderator: bool = False
    is_owner: bool = False

    def may_see(self, job: Job) -> bool:
        return self.is_owner or job.guild_id == self.guild_id

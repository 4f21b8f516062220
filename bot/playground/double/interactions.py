"""Interactions the double dispatched, and everything the bot did in answer to each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .model import Message, PartInfo
from .state import World

JSON = dict[str, Any]

PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
TOKEN_LIFETIME_S = 15 * 60


@dataclass(frozen=True)
class ResponseRecord:
    """One thing the bot did with an interaction's id/token, accepted or not.

    ``kind`` is "callback", "followup", "get", "edit" or "delete"; ``target`` is
    "@original" or a message id for the message routes; ``elapsed_s`` is measured
    on the double's clock from dispatch to receipt.
    """

    kind: str
    method: str
    path: str
    status: int
    code: int | None
    callback_type: int | None
    data: JSON | None
    files: tuple[PartInfo, ...]
    message_id: int | None
    target: str | None
    at: float
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class InteractionFailed(AssertionError):
    """The bot's answer was rejected (what a user would see as "This interaction failed")."""


class DoubleInteraction:
    """An interaction the double sent to the bot."""

    def __init__(
        self,
        world: World,
        *,
        id: int,
        token: str,
        type: int,
        payload: JSON,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        name: str,
        source_message_id: int | None = None,
    ) -> None:
        self._world = world
        self.id = id
        self.token = token
        self.type = type
        self.payload = payload
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user_id = user_id
        self.name = name
        self.source_message_id = source_message_id
        self.dispatched_at = world.clock.now()
        self.responses: list[ResponseRecord] = []
        self.acked_type: int | None = None
        self.original_message_id: int | None = None
        self.followup_ids: list[int] = []
        self.modal: JSON | None = None

    def __repr__(self) -> str:
        return f"<DoubleInteraction id={self.id} type={self.type} name={self.name!r}>"

    # -- state ---------------------------------------------------------------------------

    def age(self) -> float:
        """Seconds (double clock) since dispatch."""
        return self._world.clock.now() - self.dispatched_at

    @property
    def token_expired(self) -> bool:
        return self.age() > TOKEN_LIFETIME_S

    @property
    def original_message(self) -> Message | None:
        """The response message (or, for component updates, the clicked message)."""
        if self.original_message_id is None:
            return None
        return self._world.messages.get(self.original_message_id)

    @property
    def followups(self) -> list[Message]:
        """Messages created by followups, in order (not the one that replaced a defer)."""
        return [self._world.messages[i] for i in self.followup_ids]

    def record(self, record: ResponseRecord) -> None:
        self.responses.append(record)
        self._world.notify("INTERACTION_RESPONSE", self)
        self._world.changed()

    # -- waiting -------------------------------------------------------------------------

    async def wait_for_response(
        self, predicate: Callable[[ResponseRecord], bool], timeout: float = 5.0, what: str = ""
    ) -> ResponseRecord:
        """The first recorded response matching ``predicate``."""

        def find() -> ResponseRecord | None:
            return next((r for r in self.responses if predicate(r)), None)

        found: ResponseRecord = await self._world.wait_for(
            find,
            timeout,
            lambda: (
                f"{self!r}: no {what or 'matching response'} in {timeout}s; "
                f"responses so far: {self.responses}"
            ),
        )
        return found

    async def wait_ack(
        self, timeout: float = 5.0, *, allow_rejected: bool = False
    ) -> ResponseRecord:
        """The first callback; raises :class:`InteractionFailed` if Discord rejected it."""
        record = await self.wait_for_response(lambda r: r.kind == "callback", timeout, "callback")
        if not record.ok and not allow_rejected:
            raise InteractionFailed(
                f"{self!r}: callback rejected with {record.status} code {record.code} "
                f"after {record.elapsed_s:.3f}s"
            )
        return record

    async def wait_for_followup(self, timeout: float = 5.0, *, count: int = 1) -> ResponseRecord:
        """The ``count``-th accepted followup (POST to the interaction webhook)."""

        def find() -> ResponseRecord | None:
            accepted = [r for r in self.responses if r.kind == "followup" and r.ok]
            return accepted[count - 1] if len(accepted) >= count else None

        found: ResponseRecord = await self._world.wait_for(
            find,
            timeout,
            lambda: (
                f"{self!r}: fewer than {count} followups in {timeout}s; "
                f"responses so far: {self.responses}"
            ),
        )
        return found

"""Which job each webhook token belongs to, remembered so a webhook costs no database read.

A token never changes owner, but the job's provider and provider job id can (failover, a create
whose answer was lost). So every write that creates a job or changes them calls `put` with what
it wrote once it is committed, and an answer read from the database is remembered only if no
`put` happened while it was being read (the generation check): the cache never holds anything
older than the database.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WebhookTarget:
    job_id: str
    provider: str
    provider_job_id: str | None


class WebhookTargets:
    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._by_token: dict[str, WebhookTarget] = {}
        self._generation = 0

    def __len__(self) -> int:
        return len(self._by_token)

    @property
    def generation(self) -> int:
        """Take this before reading the database; pass it to `remember`."""
        return self._generation

    def get(self, token: str) -> WebhookTarget | None:
        return self._by_token.get(token)

    def remember(self, token: str, target: WebhookTarget, generation: int) -> None:
        """Keep `target`, read while the generation was `generation`, unless it went stale."""
        if generation != self._generation:
            return
        if len(self._by_token) >= self.capacity:
            del self._by_token[next(iter(self._by_token))]  # the oldest remembered
        self._by_token[token] = target

    def put(self, token: str, target: WebhookTarget) -> None:
        """A committed write made `target` the job of `token` (call after the commit)."""
        self._generation += 1
        self._by_token.pop(token, None)  # re-inserted as the newest
        self.remember(token, target, self._generation)

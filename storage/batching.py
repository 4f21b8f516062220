"""Group commit for single statements: requests that arrive while earlier ones are being written
are written together, as one statement and one commit (SQLite's writer already shares one
commit between the writes that queue behind it; this also shares the statement, which is what
makes concurrent ledger movements cheap on PostgreSQL, where each statement otherwise pays for
its own commit, round trip and trigger set-up).

A request alone is sent at once (no waiting for company); requests that find every slot busy
wait for the next free one and go together, up to `max_batch` of them. The batch function gets
the requests in arrival order and returns one outcome per request, a value or the exception
that request alone should raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from storage.database import Database, Row, Tx

__all__ = ["Batcher", "RowsStatement"]

R = TypeVar("R")
T = TypeVar("T")

BatchFn = Callable[[Sequence[R]], Awaitable[Sequence[T | BaseException]]]


@dataclass
class _Waiting(Generic[R, T]):
    request: R
    future: asyncio.Future[T] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Batcher(Generic[R, T]):
    """Runs `batch_fn` on the requests submitted while `slots` batches are already running."""

    def __init__(self, batch_fn: BatchFn[R, T], *, slots: int = 4, max_batch: int = 64) -> None:
        if slots < 1 or max_batch < 1:
            raise ValueError("a batcher needs at least one slot and one request per batch")
        self._batch_fn = batch_fn
        self._slots = slots
        self._max_batch = max_batch
        self._running = 0
        self._waiting: list[_Waiting[R, T]] = []
        self.batches = 0  # batches run (for tests and benchmarks)

    async def submit(self, request: R) -> T:
        """The outcome of `request`, written alone or with others."""
        if self._running < self._slots and not self._waiting:
            return await self._alone(request)
        waiting: _Waiting[R, T] = _Waiting(request)
        self._waiting.append(waiting)
        self._start_batches()
        return await waiting.future

    async def _alone(self, request: R) -> T:
        """A slot is free and nobody waits: run it now, in the caller's own task."""
        self._running += 1
        self.batches += 1
        try:
            outcomes = await self._batch_fn([request])
        finally:
            self._running -= 1
            self._start_batches()
        if len(outcomes) != 1:
            raise RuntimeError(f"a batch of 1 request gave {len(outcomes)} outcomes")
        outcome = outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _start_batches(self) -> None:
        while self._running < self._slots:
            self._waiting = [w for w in self._waiting if not w.future.done()]  # drop cancelled
            if not self._waiting:
                return
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            self._running += 1
            self.batches += 1
            task = asyncio.ensure_future(self._run(batch))
            task.add_done_callback(self._finished)

    def _finished(self, _task: asyncio.Future[None]) -> None:
        self._running -= 1
        self._start_batches()

    async def _run(self, batch: list[_Waiting[R, T]]) -> None:
        try:
            outcomes = await self._batch_fn([w.request for w in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(
                    f"a batch of {len(batch)} requests gave {len(outcomes)} outcomes"
                )
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.future.cancel()
            raise
        except Exception as error:  # every waiter must hear of it
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(error)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.future.done():  # its caller was cancelled
                continue
            if isinstance(outcome, BaseException):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)


class RowsStatement:
    """A statement written once for many rows: `head`, then one `row` (with `?` placeholders)
    per request, joined by commas, then `tail`. Each request is the row's parameters; the first
    `len(key_columns)` of them are the row's unique key, which the statement's RETURNING rows
    carry in `key_columns`.

    On a database that groups concurrent writes into one commit itself (SQLite), each request is
    written alone: sharing the statement too measured slower there (bench/ledger.py SQLite 1.2-1.4
    of its baseline alone, 0.9-1.1 shared).

    A batch runs as one statement. If the database refuses it (one row broke a rule), each
    request is run again alone, so only the one that broke the rule is refused, with its own
    error.

    `slots`: statements of this kind in flight at once. One: the fewer in flight, the larger
    each batch and the fewer commits (bench/ledger.py on PostgreSQL, 64 members at once on 2
    cores: one slot 0.80-0.87 of the baseline, two 0.55-0.65, four 0.55, none shared 0.37). The
    cost is that a statement waiting on a row lock holds up the next batch; the bot's own holds
    and captures run inside its job transactions, which are not batched."""

    def __init__(
        self,
        db: Database,
        head: str,
        row: str,
        tail: str,
        *,
        key_columns: tuple[str, ...],
        refusals: tuple[type[BaseException], ...],
        slots: int = 1,
        max_batch: int = 64,
    ) -> None:
        self._db = db
        self._head, self._row, self._tail = head, row, tail
        self._key_columns = key_columns
        self._alone = 0  # requests written alone (a database that groups commits itself)
        self._refusals = refusals
        self._batcher: Batcher[tuple[Any, ...], list[Row]] = Batcher(
            self._run, slots=slots, max_batch=max_batch
        )

    @property
    def batches(self) -> int:
        """Statements written."""
        return self._batcher.batches + self._alone

    async def write(self, params: Sequence[Any], tx: Tx | None = None) -> list[Row]:
        """The rows the statement returned for this request's row (none if it wrote nothing);
        in the caller's transaction `tx`, if given, alone."""
        if tx is not None:
            return await tx.fetchall(self.sql(1), params)
        if self._db.groups_commits:  # its writer shares the commit already: go alone
            self._alone += 1
            return await self._db.write_statement(self.sql(1), params)
        return await self._batcher.submit(tuple(params))

    def sql(self, rows: int) -> str:
        return self._head + ", ".join([self._row] * rows) + self._tail

    async def _run(self, requests: Sequence[tuple[Any, ...]]) -> list[list[Row] | BaseException]:
        flat = [value for request in requests for value in request]
        try:
            rows = await self._db.write_statement(self.sql(len(requests)), flat)
        except self._refusals as error:
            if len(requests) == 1:
                return [error]
            return list(
                await asyncio.gather(
                    *(self._db.write_statement(self.sql(1), r) for r in requests),
                    return_exceptions=True,
                )
            )
        width = len(self._key_columns)
        by_key: dict[tuple[Any, ...], list[Row]] = {}
        for row in rows:
            by_key.setdefault(tuple(row[c] for c in self._key_columns), []).append(row)
        # The first request with a key gets its row; a later one with the same key wrote
        # nothing (ON CONFLICT), as if it had come after.
        return [by_key.pop(tuple(request[:width]), []) for request in requests]

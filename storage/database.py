"""What every storage backend offers: an open database, its write transactions, its rows.

`Database.open(target)` picks the backend from the target: a `postgresql://` URL opens
PostgreSQL (storage.postgres), anything else is a SQLite file path (storage.sqlite, the default).
The classes in storage/ (Ledger, JobStore, GuildPolicy, BotState) take a `Database` and write
SQLite-flavoured SQL with `?` placeholders; a backend runs it as its server needs and branches on
`dialect` only where the SQL itself must differ.

A write is a function of a `Tx` that the backend runs atomically, and returns its result only
once it is durable. Both backends give write functions the same isolation: as if run one at a
time (SQLite has one writer; PostgreSQL runs them SERIALIZABLE and re-runs one that lost a race),
so a write function may read, decide and write without a race, and may be run more than once.
A single statement (`write_statement`) must carry its own conditions (WHERE, ON CONFLICT) or
leave them to the schema.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from storage.clock import Clock

__all__ = ["Database", "Params", "Row", "Tx", "WriteFn", "numbered_migrations"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


def numbered_migrations(package: str) -> list[tuple[int, str, str]]:
    """(version, name, SQL) of the `NNNN_name.sql` files shipped in `package`, in order."""
    found = []
    for entry in resources.files(package).iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name[5:-4], entry.read_text(encoding="utf-8")))
    return sorted(found)


class Row(Protocol):
    """A result row: by column name or position (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def keys(self) -> Any: ...


class Tx(ABC):
    """The statements of one write, run inside its backend's open transaction."""

    def __init__(self) -> None:
        self._after: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the transaction has committed with this write in it (not at
        all if the write or the transaction is rolled back): for dropping or refreshing cached
        copies of what the write changed."""
        self._after.append(callback)

    def mark(self) -> int:
        """Where the next write's callbacks start (see `drop_since`)."""
        return len(self._after)

    def drop_since(self, mark: int) -> None:
        """The write that started at `mark` was rolled back: forget its callbacks."""
        del self._after[mark:]

    def run_after_commit(self, committed: bool) -> None:
        callbacks, self._after = self._after, []
        if not committed:
            return
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("an after-commit callback failed")

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    @abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""


WriteFn = Callable[[Tx], Awaitable[T]]


class Database(ABC):
    """An open klingbot database. Build with `await Database.open(target)`; close with `close()`."""

    dialect: ClassVar[str]
    # Whether writes that arrive together already share one commit (SQLite's single writer
    # groups them), so there is nothing to gain by also sharing statements (storage/batching.py).
    groups_commits: ClassVar[bool] = False
    url_schemes: ClassVar[tuple[str, ...]] = ()
    _by_scheme: ClassVar[dict[str, type[Database]]] = {}
    _default: ClassVar[type[Database] | None] = None
    clock: Clock

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.url_schemes:
            Database._by_scheme[scheme] = cls
        if not cls.url_schemes:
            Database._default = cls

    @classmethod
    def backend_for(cls, target: str | Path) -> type[Database]:
        """The backend class that opens `target` (a URL scheme it knows, else the file one)."""
        scheme = str(target).partition("://")[0].lower() if "://" in str(target) else ""
        backend = Database._by_scheme.get(scheme) if scheme else Database._default
        if backend is None:
            known = ", ".join(sorted(Database._by_scheme)) or "none"
            raise ValueError(
                f"Unknown database URL scheme {scheme!r}: use a file path for SQLite or one of: {known}."
            )
        return backend

    @classmethod
    async def open(
        cls,
        target: str | Path,
        *,
        clock: Clock | None = None,
        migrate: bool = True,
        **options: Any,
    ) -> Database:
        """Open the database at `target` (a SQLite path or a `postgresql://` URL) and, unless
        `migrate` is False, apply pending migrations. `options` go to the backend."""
        backend = cls if cls is not Database else cls.backend_for(target)
        return await backend.connect(target, clock=clock, migrate=migrate, **options)

    @classmethod
    @abstractmethod
    async def connect(
        cls, target: str | Path, *, clock: Clock | None, migrate: bool, **options: Any
    ) -> Database:
        """The backend's own `open`."""

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the data lives, safe to print (a path, or a URL without its password)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish queued writes, then close every connection."""

    # -- reads ---------------------------------------------------------------------------------

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a read-only query against committed data."""

    @abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    # -- writes --------------------------------------------------------------------------------

    @property
    @abstractmethod
    def commits(self) -> int:
        """Write transactions this process committed since the database was opened."""

    @abstractmethod
    async def next_commit(self, after: int) -> int:
        """Wait until this process has committed more than `after` transactions; return how many
        have (for whoever watches the data change: tests, tools)."""

    @abstractmethod
    async def write(self, fn: WriteFn[T]) -> T:
        """Run `fn(tx)` atomically; return its result once durable."""

    @abstractmethod
    async def write_statement(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement atomically; return its rows once durable."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Raise DatabaseUnavailable unless a write transaction can be opened and committed."""

    @abstractmethod
    async def set_query_only(self, on: bool) -> None:
        """Refuse (or allow again) every write from this process: for maintenance, and to
        rehearse a database that stops taking writes under the running bot."""

    # -- migrations ----------------------------------------------------------------------------

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply every migration not yet applied, each in its own transaction; return versions."""

    @abstractmethod
    async def schema_version(self) -> int: ...

"""Persistent state: the database, the credit ledger, jobs and guild policy.

Nothing outside this package writes SQL. The classes here expose plain Python values; two backends
sit behind the same methods: SQLite (storage.sqlite, the default) and PostgreSQL (storage.postgres).
Owns: the schema and its migrations, the ledger's rules (enforced by the database itself), jobs
and their allowed transitions, guild policy, the bot's small key-value state.
May import: the standard library and the database drivers (aiosqlite, asyncpg) only; never anything from bot/ or cogs/.
"""

from storage.clock import Clock, ManualClock, OffsetClock, SystemClock
from storage.database import Database, Tx
from storage.errors import (
    DatabaseUnavailable,
    HoldAlreadyResolved,
    HoldNotFound,
    IdempotencyConflict,
    IllegalTransition,
    InsufficientCredits,
    InvalidMovement,
    JobError,
    JobNotFound,
    LeaseLost,
    LedgerError,
    RefundExceedsCapture,
    StorageError,
)
from storage.jobs import FINAL_STATES, Job, JobEvent, JobState, JobStore, NewJob
from storage.leases import Leases, WorkedJobs
from storage.ledger import (
    AccountKind,
    AccountRef,
    AuditReport,
    Balance,
    HistoryEntry,
    Ledger,
    LedgerTotals,
    MemberUsage,
    Transfer,
    TransferKind,
)
from storage.policy import BlockedPattern, GuildPolicy, ModerationEvent, PolicySnapshot
from storage.postgres import PostgresDatabase
from storage.sqlite import SqliteDatabase
from storage.state import BotState, Draft
from storage.vendor_rates import VendorRate, VendorRates

__all__ = [
    "FINAL_STATES",
    "AccountKind",
    "AccountRef",
    "AuditReport",
    "Balance",
    "BlockedPattern",
    "BotState",
    "Clock",
    "Database",
    "DatabaseUnavailable",
    "Draft",
    "GuildPolicy",
    "HistoryEntry",
    "HoldAlreadyResolved",
    "HoldNotFound",
    "IdempotencyConflict",
    "IllegalTransition",
    "InsufficientCredits",
    "InvalidMovement",
    "Job",
    "JobError",
    "JobEvent",
    "JobNotFound",
    "JobState",
    "JobStore",
    "LeaseLost",
    "Leases",
    "Ledger",
    "LedgerError",
    "LedgerTotals",
    "ManualClock",
    "MemberUsage",
    "ModerationEvent",
    "NewJob",
    "OffsetClock",
    "PolicySnapshot",
    "PostgresDatabase",
    "RefundExceedsCapture",
    "SqliteDatabase",
    "StorageError",
    "SystemClock",
    "Transfer",
    "TransferKind",
    "Tx",
    "VendorRate",
    "VendorRates",
    "WorkedJobs",
]

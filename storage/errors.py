"""Storage errors. Each carries a message fit to show a user or an operator.

StorageError
├── DatabaseUnavailable      the database cannot be written (read-only, disk full, locked)
├── ConstraintRefused        PostgreSQL refused a statement by a schema rule (SQLite's wording;
│                            storage code catches it with sqlite3.IntegrityError: INTEGRITY_ERRORS)
├── LedgerError
│   ├── InsufficientCredits  a movement would take an account's available balance below zero
│   ├── IdempotencyConflict  a key was reused with different fields
│   ├── HoldNotFound
│   ├── HoldAlreadyResolved  a hold was already captured, voided or expired
│   ├── RefundExceedsCapture a refund would give back more than was captured for its job
│   └── InvalidMovement      a movement the ledger refuses for another reason
└── JobError
    ├── JobNotFound
    ├── IllegalTransition    a job state change the job model does not allow
    └── LeaseLost            this process no longer holds the job's lease (storage.leases)
"""

from __future__ import annotations

import sqlite3


class StorageError(Exception):
    """Base of every storage error; `str(error)` is the human-readable message."""


class DatabaseUnavailable(StorageError):
    """The database refused a write for a reason outside the request (read-only, full, locked)."""


class ConstraintRefused(StorageError):
    """A statement broke a rule of the schema (constraint or trigger), worded as SQLite words it."""


# What a refused statement raises, on either backend.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, ConstraintRefused)


class LedgerError(StorageError):
    """A ledger movement was refused."""


class InsufficientCredits(LedgerError):
    def __init__(self, requested: int, available: int | None = None) -> None:
        self.requested = requested
        self.available = available
        have = "" if available is None else f" but only {available} are available"
        super().__init__(f"This needs {requested} credits{have}.")


class IdempotencyConflict(LedgerError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"Idempotency key {key!r} was already used for a different movement.")


class HoldNotFound(LedgerError):
    def __init__(self, hold_id: int) -> None:
        self.hold_id = hold_id
        super().__init__(f"Hold {hold_id} does not exist.")


class HoldAlreadyResolved(LedgerError):
    def __init__(self, hold_id: int, resolution: str | None = None) -> None:
        self.hold_id = hold_id
        self.resolution = resolution
        how = f" ({resolution})" if resolution else ""
        super().__init__(f"Hold {hold_id} was already resolved{how}.")


class RefundExceedsCapture(LedgerError):
    """A refund would return more credits than were captured for its job (or names no job)."""

    def __init__(self, requested: int) -> None:
        self.requested = requested
        super().__init__(
            f"A refund of {requested} credits is more than what is left of the credits captured"
            " for its job."
        )


class InvalidMovement(LedgerError):
    """The ledger refused a movement (bad amount, unknown account, mismatched accounts)."""


class JobError(StorageError):
    """A job operation was refused."""


class JobNotFound(JobError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"No job with id {job_id!r}.")


class IllegalTransition(JobError):
    def __init__(self, job_id: str, from_state: str, to_state: str) -> None:
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state
        super().__init__(f"Job {job_id} cannot go from {from_state} to {to_state}.")


class LeaseLost(JobError):
    """A write or step conditional on the job's lease found another process holding it (or, for
    a fence, the lease lapsed or the job moved on): the process that holds it finishes it."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"This process no longer holds the lease of job {job_id}.")

"""Every error klingbot raises, in one tree. Each carries its own message: `str(error)` is a
sentence fit to show the person concerned (a member, a moderator, an operator); details for the
logs live in attributes. The Discord front end turns them into replies in one place (its
CommandTree's error handler); the web app turns webhook refusals into HTTP statuses.

    KlingbotError                      bot/errors.py
    ├── ConfigError                    settings missing or invalid; klingbot refuses to start
    ├── UserError                      the person asking can fix it; shown to them privately
    │   ├── InvalidRequest             the video request breaks a limit (every problem listed)
    │   ├── PolicyRefusal              a server rule refused it (which rule, when it frees up)
    │   ├── NotPermitted               the person may not do this
    │   └── NotFound                   the job (or other thing) named does not exist
    ├── ServiceUnavailable             klingbot cannot do it right now; nothing was charged
    ├── ProviderError (kind)           bot/providers/errors.py: a call *to* a vendor failed
    ├── WebhookRefused (http_status)   bot/providers/errors.py: a call *from* a vendor is refused
    │   ├── WebhookAuthError   → 401   missing or invalid signature, stale timestamp
    │   └── WebhookParseError  → 400   not JSON, or not the vendor's payload shape
    ├── MediaError                     bot/media/errors.py: a clip cannot be read or re-encoded
    │   └── CannotFitError             not even a re-encode fits the upload limit
    └── DeliveryError (retryable)      bot/pipeline/delivery.py: a finished clip was not posted

    StorageError                       storage/errors.py (storage imports nothing from bot/)
    ├── DatabaseUnavailable            the database cannot be written (read-only, full, locked)
    ├── LedgerError                    InsufficientCredits, IdempotencyConflict, HoldNotFound,
    │                                  HoldAlreadyResolved, InvalidMovement
    └── JobError                       JobNotFound, IllegalTransition
"""

from __future__ import annotations


class KlingbotError(Exception):
    """Base error; the message is meant for a person."""


class ConfigError(KlingbotError):
    """A setting is missing or invalid."""


class UserError(KlingbotError):
    """The request cannot be done as asked; the person can change it."""


class InvalidRequest(UserError):
    """The video request breaks one or more limits."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            text = problems[0]
        else:
            text = "Please fix these:\n" + "\n".join(f"• {p}" for p in problems)
        super().__init__(text)


class PolicyRefusal(UserError):
    """A server rule refused the request."""

    def __init__(self, rule: str, message: str, *, resets_at_ms: int | None = None) -> None:
        self.rule = rule
        self.resets_at_ms = resets_at_ms
        if resets_at_ms is not None:
            message += f" It resets <t:{resets_at_ms // 1000}:R>."
        super().__init__(message)


class NotPermitted(UserError):
    """The person may not do this."""


class NotFound(UserError):
    """The thing named does not exist."""


class ServiceUnavailable(KlingbotError):
    """klingbot cannot do this right now; nothing was charged."""

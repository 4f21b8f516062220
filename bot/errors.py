"""klingbot's errors. Each carries its own user-facing message (`str(error)`).

    KlingbotError
    ├── ConfigError          settings missing or invalid; klingbot refuses to start
    ├── UserError            the person asking can fix it; shown to them privately
    │   ├── InvalidRequest   the video request breaks a limit (every problem listed)
    │   ├── PolicyRefusal    a server rule refused it (which rule, and when it frees up)
    │   ├── NotPermitted     the person may not do this
    │   └── NotFound         the job (or other thing) named does not exist
    └── ServiceUnavailable   klingbot cannot do it right now (database, provider down)

Provider errors live in `bot.providers.errors`; ledger and job errors in `storage.errors`.
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

"""Exceptions raised by the media helpers."""

from __future__ import annotations

from bot.errors import KlingbotError


class MediaError(KlingbotError):
    """A media file could not be read, rendered or re-encoded.

    ``str(err)`` is a short human-readable sentence that names the file and,
    for unexpected failures, appends the underlying error.
    """


def _format_bytes(n_bytes: int) -> str:
    if n_bytes >= 1_000_000:
        return f"{n_bytes / 1_000_000:.1f} MB"
    if n_bytes >= 1_000:
        return f"{n_bytes / 1_000:.0f} KB"
    return f"{n_bytes} B"


class CannotFitError(MediaError):
    """A clip cannot be re-encoded to fit ``max_bytes``.

    ``best_bytes`` is the size of the smallest encode that was produced.
    """

    def __init__(self, max_bytes: int, best_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.best_bytes = best_bytes
        super().__init__(
            f"the clip cannot be made smaller than {_format_bytes(best_bytes)}, "
            f"the limit is {_format_bytes(max_bytes)}"
        )

    def __reduce__(self) -> tuple[type[CannotFitError], tuple[int, int]]:
        return (type(self), (self.max_bytes, self.best_bytes))

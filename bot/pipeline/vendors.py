"""The configured video providers, by name, and the one used when a request names none."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from bot.errors import ServiceUnavailable
from bot.providers import VideoProvider
from bot.providers.download import DownloadPolicy


class Vendors:
    def __init__(self, adapters: Mapping[str, VideoProvider], default: str) -> None:
        self._adapters = dict(adapters)
        self.default = default

    def __iter__(self) -> Iterator[str]:
        return iter(self._adapters)

    def get(self, name: str) -> VideoProvider | None:
        return self._adapters.get(name)

    def require(self, name: str | None = None) -> tuple[str, VideoProvider]:
        """The named provider (or the default); ServiceUnavailable if it is not configured."""
        name = name or self.default
        adapter = self._adapters.get(name)
        if adapter is None:
            raise ServiceUnavailable(f"The provider {name!r} is not configured.")
        return name, adapter

    def download_policy(self, name: str) -> DownloadPolicy:
        """Where `name`'s clips may be downloaded from: https at public addresses; http and any
        address only at a configured provider's base URL; file:// only under its own files."""
        adapter = self._adapters.get(name)
        return DownloadPolicy.trusting(
            (a.settings.base_url for a in self._adapters.values()),
            file_root=adapter.files_dir if adapter is not None else None,
        )

"""Webhook deliveries known to be stored, so that a vendor's retries cost no database write.

Only keys whose row is committed (or was found already there) are added, so "seen here" always
means "stored". The newest `capacity` keys are kept; an older retry goes to the database, which
answers the same.
"""

from __future__ import annotations


class SeenDeliveries:
    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._keys: dict[tuple[str, str], None] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, str]) -> None:
        """Remember `key` (provider, delivery key): its row is in the database."""
        if key in self._keys:
            return
        if len(self._keys) >= self.capacity:
            del self._keys[next(iter(self._keys))]  # the oldest
        self._keys[key] = None

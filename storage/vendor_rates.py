"""Each vendor's create budget, kept in the database so that every process draws from one.

A row is a token bucket's state (bot.pipeline.rates does the arithmetic). `lock` is called first
in the transaction that moves jobs out of the queue: on PostgreSQL it locks the vendor's row
(`FOR UPDATE`), which serializes the claims for one vendor across processes, so the count of its
live jobs read next is exact; on SQLite the write transaction is exclusive already.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database, Row, Tx

__all__ = ["VendorRate", "VendorRates"]


@dataclass(frozen=True)
class VendorRate:
    per_min: float  # the current rate
    level: float  # tokens at updated_ms
    updated_ms: int
    resume_ms: int  # nothing is granted before this (a 429's pause)


class VendorRates:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def lock(self, provider: str, initial: VendorRate, *, tx: Tx) -> VendorRate:
        """The vendor's bucket (stored as `initial` if it has none yet), locked until commit."""
        await tx.execute(
            "INSERT INTO vendor_rates (provider, per_min, level, updated_ms, resume_ms)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (provider) DO NOTHING",
            (provider, initial.per_min, initial.level, initial.updated_ms, initial.resume_ms),
        )
        lock = " FOR UPDATE" if self._db.dialect == "postgresql" else ""
        row = await tx.fetchone(
            "SELECT per_min, level, updated_ms, resume_ms FROM vendor_rates WHERE provider = ?"
            + lock,
            (provider,),
        )
        assert row is not None
        return _rate(row)

    async def save(self, provider: str, rate: VendorRate, *, tx: Tx) -> None:
        await tx.execute(
            "UPDATE vendor_rates SET per_min = ?, level = ?, updated_ms = ?, resume_ms = ?"
            " WHERE provider = ?",
            (rate.per_min, rate.level, rate.updated_ms, rate.resume_ms, provider),
        )

    async def get(self, provider: str) -> VendorRate | None:
        row = await self._db.fetchone(
            "SELECT per_min, level, updated_ms, resume_ms FROM vendor_rates WHERE provider = ?",
            (provider,),
        )
        return None if row is None else _rate(row)


def _rate(row: Row) -> VendorRate:
    return VendorRate(
        float(row["per_min"]), float(row["level"]), int(row["updated_ms"]), int(row["resume_ms"])
    )

"""The migrations shipped in storage/migrations, read from the files themselves, so no test
hard-codes how many there are."""

from __future__ import annotations

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "storage" / "migrations"


def migration_versions() -> list[int]:
    """The numbers of the `NNNN_name.sql` files, in order."""
    return sorted(int(p.name[:4]) for p in MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def latest_version() -> int:
    return migration_versions()[-1]

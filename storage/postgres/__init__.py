"""The PostgreSQL backend, for bots that outgrow one machine: several processes share one set of
books. Selected by `KLINGBOT_DATABASE_URL=postgresql://...`; SQLite stays the default.

Owns: the asyncpg pools and write transactions (database.py), turning the storage classes' SQL
into PostgreSQL's (sql.py), and PostgreSQL's own numbered migrations (migrations/).
May import: the standard library, asyncpg, and storage's shared modules.
"""

from storage.postgres.database import PostgresDatabase, PostgresTx, redacted

__all__ = ["PostgresDatabase", "PostgresTx", "redacted"]

"""The PostgreSQL backend (asyncpg), beside SQLite: the same public storage classes and errors,
selected by `KLINGBOT_DATABASE_URL`. Its numbered migrations in `storage/postgres/migrations`
mirror `storage/migrations` one for one (same numbers and names, same tables, columns, column
order and constraint names), so schema versions line up and `klingbot db copy` can move a SQLite
install table by table. The ledger's rules are enforced by PostgreSQL itself, under concurrency.
"""

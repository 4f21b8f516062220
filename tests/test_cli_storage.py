"""`klingbot db upgrade` and `klingbot ledger audit` as a user runs them."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.backends import both_backends, create_database, drop_database, require_postgres
from tests.migrations_on_disk import migration_versions

ROOT = Path(__file__).resolve().parent.parent


def klingbot(
    *args: str, db_path: Path, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLINGBOT_")}
    env["KLINGBOT_DB_PATH"] = str(db_path)
    if database_url:
        env["KLINGBOT_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=db_path.parent,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@both_backends
async def test_db_upgrade_then_audit(tmp_path: Path, backend: str) -> None:
    db_path = tmp_path / "k.db"
    url = None
    if backend == "postgresql":
        require_postgres()
        url = await create_database(migrated=False)
    try:
        versions = migration_versions()
        first = klingbot("db", "upgrade", db_path=db_path, database_url=url)
        assert first.returncode == 0, first.stderr
        applied = ", ".join(map(str, versions))
        assert f"Applied migrations {applied}; schema is at version {versions[-1]}." in first.stdout
        second = klingbot("db", "upgrade", db_path=db_path, database_url=url)
        assert f"up to date (schema version {versions[-1]})" in second.stdout
        audit = klingbot("ledger", "audit", db_path=db_path, database_url=url)
        assert audit.returncode == 0 and "result: OK" in audit.stdout
        assert not db_path.exists() or url is None  # PostgreSQL leaves no SQLite file behind
    finally:
        if url:
            await drop_database(url)


async def test_several_processes_starting_at_once_migrate_once(tmp_path: Path) -> None:
    """Three `db upgrade` at the same moment on one new PostgreSQL database: the advisory lock
    lets one apply each migration; the others find it applied."""
    require_postgres()
    url = await create_database(migrated=False)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLINGBOT_")}
        env.update(PYTHONPATH=str(ROOT), KLINGBOT_DATABASE_URL=url)
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "db",
                "upgrade",
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(3)
        ]
        outputs = [await p.communicate() for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outputs
        appliers = [out for out, _ in outputs if b"Applied migrations" in out]
        assert len(appliers) == 1, outputs
        versions = migration_versions()
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        finally:
            await conn.close()
        assert [r["version"] for r in rows] == versions
    finally:
        await drop_database(url)


def test_audit_exits_nonzero_on_violation(tmp_path: Path) -> None:
    db_path = tmp_path / "k.db"
    assert klingbot("db", "upgrade", db_path=db_path).returncode == 0
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DROP TRIGGER accounts_totals_guard")
    conn.execute("UPDATE accounts SET debits_posted = 7 WHERE kind = 'spend'")
    conn.close()
    audit = klingbot("ledger", "audit", db_path=db_path)
    assert audit.returncode == 1
    assert "violation" in audit.stdout and "differ from its entries" in audit.stdout


def test_audit_without_database(tmp_path: Path) -> None:
    result = klingbot("ledger", "audit", db_path=tmp_path / "missing.db")
    assert result.returncode == 2 and "KLINGBOT_DB_PATH" in result.stderr


def test_bad_setting_is_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLINGBOT_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "db", "upgrade"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "KLINGBOT_HTTP_PORT": "nope"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "KLINGBOT_HTTP_PORT" in result.stderr and "Traceback" not in result.stderr

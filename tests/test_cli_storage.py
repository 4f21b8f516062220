"""`klingbot db upgrade` and `klingbot ledger audit` as a user runs them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.migrations_on_disk import migration_versions

ROOT = Path(__file__).resolve().parent.parent


def klingbot(*args: str, db_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLINGBOT_")}
    env["KLINGBOT_DB_PATH"] = str(db_path)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=db_path.parent,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_upgrade_then_audit(tmp_path: Path) -> None:
    db_path = tmp_path / "k.db"
    versions = migration_versions()
    first = klingbot("db", "upgrade", db_path=db_path)
    assert first.returncode == 0, first.stderr
    applied = ", ".join(map(str, versions))
    assert f"Applied migrations {applied}; schema is at version {versions[-1]}." in first.stdout
    second = klingbot("db", "upgrade", db_path=db_path)
    assert f"up to date (schema version {versions[-1]})" in second.stdout
    audit = klingbot("ledger", "audit", db_path=db_path)
    assert audit.returncode == 0 and "result: OK" in audit.stdout


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

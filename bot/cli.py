"""The `klingbot` command line (also `python -m bot`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bot.errors import KlingbotError
from bot.settings import Settings, load_settings
from storage import StorageError

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


async def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from storage import Database

    db = await Database.open(settings.database_target, migrate=False)
    async with db:
        applied = await db.migrate()
        version = await db.schema_version()
        where = db.location
    if applied:
        print(f"Applied migrations {', '.join(map(str, applied))}; schema is at version {version}.")
    else:
        print(f"Database {where} is up to date (schema version {version}).")
    return 0


async def cmd_db_copy(args: argparse.Namespace, settings: Settings) -> int:
    from storage import Database
    from storage.copy import copy_database
    from storage.postgres import redacted

    target_url: str = args.to
    if not target_url.startswith(("postgresql://", "postgres://")):
        print(
            "--to must be a PostgreSQL URL (postgresql://user:password@host/db).", file=sys.stderr
        )
        return 2
    if not settings.db_path.exists():
        print(f"No SQLite database at {settings.db_path} (KLINGBOT_DB_PATH).", file=sys.stderr)
        return 2
    async with (
        await Database.open(settings.db_path) as source,
        await Database.open(target_url) as target,
    ):
        report = await copy_database(source, target)
    for table, count in report.rows.items():
        print(f"{table}: {count} rows")
    assert report.source_audit is not None and report.target_audit is not None
    print(f"\nSQLite ({settings.db_path}):\n{report.source_audit.render()}")
    print(f"\nPostgreSQL ({redacted(target_url)}):\n{report.target_audit.render()}")
    if not report.ok:
        print("\nThe audits differ: do not switch yet.", file=sys.stderr)
        return 1
    print(
        "\nCopied; balances, job states and audits match. To switch, set"
        " KLINGBOT_DATABASE_URL to that URL and restart the bot (keep the SQLite file as a backup)."
    )
    return 0


async def cmd_ledger_audit(args: argparse.Namespace, settings: Settings) -> int:
    from storage import Database, Ledger

    if settings.database_url is None and not settings.db_path.exists():
        print(f"No database at {settings.db_path} (KLINGBOT_DB_PATH).", file=sys.stderr)
        return 2
    async with await Database.open(settings.database_target) as db:
        report = await Ledger(db).audit()
    print(report.render())
    return 0 if report.ok else 1


async def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from bot.generate_cli import run_generate

    return await run_generate(args, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="klingbot",
        description="Discord bot for Kling v3 Pro text-to-video, paid from a credit ledger.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from bot.discord.cli import add_commands
    from bot.generate_cli import add_arguments
    from bot.playground.cli import add_commands as add_playground_commands

    add_commands(sub)
    add_playground_commands(sub)

    generate = sub.add_parser(
        "generate",
        help="make one clip through the configured provider (offline with local)",
        description="Validate, price and run one job; save the clip (not charged to anyone).",
    )
    add_arguments(generate)
    generate.set_defaults(func=cmd_generate)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply pending migrations").set_defaults(func=cmd_db_upgrade)
    copy = db_sub.add_parser(
        "copy",
        help="copy the SQLite database (KLINGBOT_DB_PATH) into an empty PostgreSQL database",
        description="Stop the bot first. Refuses a target that is not empty; checks balances,"
        " job states and both audits before it says it is done.",
    )
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://user:pass@host/db")
    copy.set_defaults(func=cmd_db_copy)

    ledger = sub.add_parser("ledger", help="credit ledger tools")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    ledger_sub.add_parser(
        "audit", help="recompute every balance from the entries; exit 1 on any violation"
    ).set_defaults(func=cmd_ledger_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(
            level="DEBUG" if args.verbose else settings.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        func: Command = args.func
        return asyncio.run(func(args, settings))
    except (KlingbotError, StorageError) as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

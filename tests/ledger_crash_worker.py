"""Does random ledger work on a database until killed (driven by test_ledger_crash.py).

Usage: python -m tests.ledger_crash_worker DB_PATH SEED [--ack-before-commit]

Prints "ready" once the database is open, then one line per acknowledged transfer, written only
after the ledger call returned (the transfer is durable by then): `{"key", "kind", "amount"}` as
JSON. The parent checks that every acknowledged transfer survived the kill.

`--ack-before-commit` is a deliberately broken worker for the parent's own test: it acknowledges
a transfer, then never writes it (as code that answers before its COMMIT would).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from storage import AccountRef, Database, Ledger, LedgerError, Transfer

GUILDS = (1, 2)
USERS = (1, 2, 3)


def acknowledge(key: str, kind: str, amount: int) -> None:
    # one write of one short line: a kill never leaves half an acknowledgement behind
    sys.stdout.write(json.dumps({"key": key, "kind": kind, "amount": amount}) + "\n")
    sys.stdout.flush()


async def work(path: str, seed: int) -> None:
    rng = random.Random(seed)
    async with await Database.open(path) as db:
        ledger = Ledger(db)
        print("ready", flush=True)
        holds: list[int] = []
        n = 0
        while True:
            n += 1
            batch = []
            for _ in range(rng.randint(1, 20)):
                n += 1
                g, u = rng.choice(GUILDS), rng.choice(USERS)
                op = rng.random()
                key = f"{seed}:{n}:{rng.random()}"
                if op < 0.15:
                    batch.append(ledger.fund_pool(g, rng.randint(1, 500), key=key))
                elif op < 0.3:
                    batch.append(ledger.grant(g, u, rng.randint(1, 100), key=key))
                elif op < 0.65:
                    payer = rng.choice([AccountRef.member(g, u), AccountRef.pool(g)])
                    batch.append(ledger.reserve(key=key, payer=payer, amount=rng.randint(1, 60)))
                elif holds:
                    hold = holds.pop(rng.randrange(len(holds)))
                    choice = rng.random()
                    if choice < 0.6:
                        batch.append(ledger.capture(hold, rng.choice([None, rng.randint(0, 10)])))
                    elif choice < 0.85:
                        batch.append(ledger.void(hold))
                    else:
                        batch.append(ledger.expire(hold))
            results = await asyncio.gather(*batch, return_exceptions=True)
            for result in results:
                if isinstance(result, LedgerError):
                    continue
                if isinstance(result, BaseException):
                    raise result
                assert isinstance(result, Transfer)
                acknowledge(result.key, result.kind.value, result.amount)
                if result.kind.value == "pending":
                    holds.append(result.id)


async def ack_before_commit(path: str, seed: int) -> None:
    async with await Database.open(path):
        print("ready", flush=True)
        acknowledge(f"{seed}:never-written", "single", 1)
        await asyncio.Event().wait()  # killed before the acknowledged write is made


if __name__ == "__main__":
    worker = ack_before_commit if "--ack-before-commit" in sys.argv[3:] else work
    asyncio.run(worker(sys.argv[1], int(sys.argv[2])))

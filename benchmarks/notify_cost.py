"""What PostgreSQL's NOTIFY costs an append (eventstore/subscribe.py, docs/subscriptions.md).

Every append on PostgreSQL runs one more statement, ``SELECT pg_notify(...)``, and the
server serialises the commits of transactions that notified (its notification queue
keeps commit order). This script appends in blocks of 40 per task, alternating blocks
with the NOTIFY and blocks with it switched off (``PostgresDialect.announce`` replaced
by a no-op in this process), so that the load of the machine hits both alike, and
prints the median time per append of each, for 1 task and for 4 tasks on 4 streams.
Then, without convstore: 8 asyncpg connections each inserting one row per
transaction for a while, with no NOTIFY, with one inside the transaction, and with one
run after the commit on its own, in transactions per second.

    python benchmarks/notify_cost.py [--postgres-url URL] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from _common import POSTGRES_URL, drop_tables_at, plain_url

from eventstore import EventStore, ItemsAdded, encode_items
from eventstore.backends.postgres import PostgresDialect

PER_BLOCK = 40


def _silent(self: PostgresDialect, conn: Any, stream_id: str) -> None:
    """announce, switched off."""


async def _block(store: EventStore, tasks: int) -> float:
    async def one(task: int) -> None:
        for n in range(PER_BLOCK):
            await store.append(f"s{task}", [ItemsAdded(items=encode_items([n]))])

    started = time.perf_counter()
    await asyncio.gather(*(one(task) for task in range(tasks)))
    return (time.perf_counter() - started) / (tasks * PER_BLOCK) * 1000


async def measure(url: str, tasks: int, rounds: int) -> dict[str, float]:
    announce = PostgresDialect.announce
    found: dict[str, list[float]] = {"with NOTIFY": [], "without": []}
    try:
        async with EventStore(url, projectors=()) as store:
            await store.append("warm-up", [ItemsAdded(items=encode_items([0]))])
            for n in range(rounds):
                order = ("with NOTIFY", "without") if n % 2 else ("without", "with NOTIFY")
                for mode in order:
                    PostgresDialect.announce = announce if mode == "with NOTIFY" else _silent  # type: ignore[method-assign]
                    found[mode].append(await _block(store, tasks))
    finally:
        PostgresDialect.announce = announce  # type: ignore[method-assign]
    return {mode: statistics.median(times) for mode, times in found.items()}


async def _raw_rate(url: str, mode: str, seconds: float) -> float:
    """Transactions/s of 8 connections inserting one row each (``mode``: none, in, after)."""
    import asyncpg  # the postgres extra

    table = "bench_notify_rows"
    setup = await asyncpg.connect(url)
    await setup.execute(f"DROP TABLE IF EXISTS {table}")
    await setup.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, v bytea)")
    notify = "SELECT pg_notify('convstore_events', 'bench')"
    done = 0

    async def writer() -> None:
        nonlocal done
        conn = await asyncpg.connect(url)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} (v) VALUES ($1)", b"x" * 300)
                if mode == "in":
                    await conn.execute(notify)
            if mode == "after":
                await conn.execute(notify)
            done += 1
        await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(8)))
    rate = done / (time.perf_counter() - started)
    await setup.execute(f"DROP TABLE {table}")
    await setup.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="default: %(default)s")
    parser.add_argument("--rounds", type=int, default=16, help="blocks of each (default 16)")
    args = parser.parse_args()
    for tasks in (1, 4):
        asyncio.run(drop_tables_at(args.postgres_url))
        medians = asyncio.run(measure(args.postgres_url, tasks, args.rounds))
        line = ", ".join(f"{mode} {ms:.2f} ms" for mode, ms in medians.items())
        print(f"{tasks} task(s): median per append: {line}")
    asyncio.run(drop_tables_at(args.postgres_url))
    plain = plain_url(args.postgres_url)
    for mode, label in (("none", "no NOTIFY"), ("in", "NOTIFY inside"), ("after", "after")):
        rates = [asyncio.run(_raw_rate(plain, mode, 2.0)) for _ in range(2)]
        print(f"asyncpg, 8 connections, {label}: {', '.join(f'{r:,.0f}' for r in rates)} tx/s")


if __name__ == "__main__":
    main()

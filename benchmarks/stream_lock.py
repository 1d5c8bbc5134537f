"""What the per-session advisory lock costs a PostgreSQL append, measured A/B in one process.

Every PostgreSQL transaction that writes a session's events first takes that session's
advisory lock (``pg_advisory_xact_lock``, eventstore/backends/postgres.py): one more
statement, so one more round trip. This script measures it against the same code with
the lock switched off (which is how appends ran before; without it, positions can
disagree with versions under concurrent writers, so it is for measuring only), in
short alternating rounds, so that the noise of a shared machine hits both alike:

* a transaction holding only the lock statement, against one holding ``SELECT 1``
  (what the statement costs by itself: its round trip and the lock);
* ``EventStore.append`` of one event to one stream, one writer (the bare log);
* four stores on the engine appending at once, to one stream (they wait for each
  other: the lock is inside that wait) or to four;
* ``SQLAlchemySession.add_items([item])``, one task, one long-lived session;
* the same add from a new session object per call on one shared engine (the web
  application's pattern: a request opens its session, adds, closes);
* ``pop_item()`` on a session of a few thousand items;
* 8 tasks adding to 8 sessions at once, each with its own session object.

Each figure is the median over rounds of the mean time per call in a round; the ratio
is lock / no lock per round, its median and range reported. The tables are dropped
before and after.

``--hot-session SECONDS`` measures contention instead: 8 processes (one engine each) x
8 tasks add to one session for SECONDS, every add through a new session object, with
the lock and without it (in the order with, without, without, with); it reports the
adds written and the audit's findings (without the lock, positions out of version
order).

    python benchmarks/stream_lock.py [--rounds N] [--calls N] [--postgres-url URL] [--json]
    python benchmarks/stream_lock.py --hot-session 60 [--postgres-url URL] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from _common import POSTGRES_URL, async_url, display_url, drop_tables_at, make_items
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventstore import EventStore, ItemsAdded, encode_items
from eventstore.backends.base import Dialect
from eventstore.backends.postgres import PostgresDialect, stream_lock_key
from sessions import SQLAlchemySession, create_tables

Call = Callable[[], Awaitable[object]]
_WITH_LOCK = PostgresDialect.lock_streams
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_NOTHING = text("SELECT 1")


def set_lock(on: bool) -> None:
    PostgresDialect.lock_streams = _WITH_LOCK if on else Dialect.lock_streams  # type: ignore[method-assign]


async def timed(calls: int, call: Call) -> float:
    """Seconds per call, over ``calls`` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls


async def measure(rounds: int, calls: int, call: Call) -> dict[str, Any]:
    """Alternate lock on / off (the order flipping every round)."""
    on: list[float] = []
    off: list[float] = []
    await timed(max(calls // 5, 1), call)  # warm-up
    for r in range(rounds):
        for lock in (True, False) if r % 2 == 0 else (False, True):
            set_lock(lock)
            (on if lock else off).append(await timed(calls, call))
    set_lock(True)
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    return {
        "with_lock_ms": statistics.median(on) * 1000,
        "without_lock_ms": statistics.median(off) * 1000,
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }


async def run(url: str, rounds: int, calls: int) -> dict[str, Any]:
    await drop_tables_at(url)
    engine: AsyncEngine = create_async_engine(async_url(url), pool_size=10)
    await create_tables(engine)
    items = make_items(64)
    results: dict[str, Any] = {}
    n = 0

    def item() -> list[dict[str, Any]]:
        nonlocal n
        n += 1
        return [items[n % len(items)]]

    async def transaction() -> None:  # the lock statement alone, or nothing
        async with engine.begin() as conn:
            if PostgresDialect.lock_streams is _WITH_LOCK:
                await conn.execute(_LOCK, {"key": stream_lock_key("bare")})
            else:
                await conn.execute(_NOTHING)

    results["a transaction: the lock statement / SELECT 1"] = await measure(
        rounds, calls, transaction
    )

    async with EventStore(engine, projectors=[]) as bare:

        async def append() -> None:
            await bare.append("bare", [ItemsAdded(items=encode_items(item()))])

        results["append, bare log"] = await measure(rounds, calls, append)

    stores = [EventStore(engine, projectors=[]) for _ in range(4)]
    for name, streams in (("4 stores, one stream", 1), ("4 stores, 4 streams", 4)):

        async def four(streams: int = streams) -> None:
            await asyncio.gather(
                *(
                    store.append(f"four-{n % streams}", [ItemsAdded(items=encode_items(item()))])
                    for n, store in enumerate(stores)
                )
            )

        results[f"append, {name}, at once (per batch of 4)"] = await measure(
            rounds, max(calls // 2, 1), four
        )
    for store in stores:
        await store.close()

    session = SQLAlchemySession("long-lived", engine=engine)

    async def add() -> None:
        await session.add_items(item())

    results["add_items([item]), one session object"] = await measure(rounds, calls, add)

    async def add_per_request() -> None:
        async with SQLAlchemySession("per-request", engine=engine) as fresh:
            await fresh.add_items(item())

    results["add_items([item]), a new session object per call"] = await measure(
        rounds, calls, add_per_request
    )

    await session.add_items(make_items(rounds * calls * 2 + 2000, seed=1))

    async def pop() -> None:
        await session.pop_item()

    results["pop_item()"] = await measure(rounds, calls, pop)
    await session.close()

    async def eight() -> None:
        async def one(t: int) -> None:
            async with SQLAlchemySession(f"task-{t}", engine=engine) as fresh:
                await fresh.add_items(item())

        await asyncio.gather(*(one(t) for t in range(8)))

    results["8 tasks, 8 sessions, add_items([item]) each (per batch of 8)"] = await measure(
        rounds, max(calls // 4, 1), eight
    )
    await engine.dispose()
    await drop_tables_at(url)
    return results


# -- one hot session, several processes ---------------------------------------------


def _hot_writer(url: str, lock: bool, seconds: float, tasks: int, counts: Any) -> None:
    """A process with one engine: ``tasks`` tasks add to the session "hot" for
    ``seconds``, each add through a new session object (one per request)."""
    set_lock(lock)

    async def serve() -> int:
        engine = create_async_engine(async_url(url), pool_size=tasks)
        done = 0
        end = time.monotonic() + seconds

        async def task(t: int) -> None:
            nonlocal done
            while time.monotonic() < end:
                async with SQLAlchemySession("hot", engine=engine) as fresh:
                    await fresh.add_items([{"role": "user", "content": f"{t}-{done}"}])
                done += 1

        await asyncio.gather(*(task(t) for t in range(tasks)))
        await engine.dispose()
        return done

    counts.put(asyncio.run(serve()))


def hot_session(url: str, seconds: float, processes: int, tasks: int) -> list[dict[str, Any]]:
    """With and without the lock (in the order with, without, without, with): adds
    written in ``seconds`` by ``processes`` x ``tasks`` writers of one session, and the
    audit's findings."""
    from sessions.admin import audit_database, open_store

    spawn = multiprocessing.get_context("spawn")
    results = []
    for lock in (True, False, False, True):
        asyncio.run(drop_tables_at(url))
        asyncio.run(create_tables(url))
        counts = spawn.Queue()
        procs = [
            spawn.Process(target=_hot_writer, args=(url, lock, seconds, tasks, counts))
            for _ in range(processes)
        ]
        for proc in procs:
            proc.start()
        added = sum(counts.get() for _ in procs)
        for proc in procs:
            proc.join()

        async def audited() -> tuple[int, int]:
            async with open_store(url) as store:
                report = await audit_database(store)
                return report.events, len(report.findings)

        events, findings = asyncio.run(audited())
        results.append({"lock": lock, "adds": added, "events": events, "findings": findings})
    asyncio.run(drop_tables_at(url))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="default: %(default)s")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per variant (default 20)")
    parser.add_argument("--calls", type=int, default=50, help="calls per round (default 50)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--hot-session",
        type=float,
        metavar="SECONDS",
        help="instead: 8 processes x 8 tasks add to one session for SECONDS, with and "
        "without the lock, then audit",
    )
    args = parser.parse_args(argv)
    if args.hot_session is not None:
        runs = hot_session(args.postgres_url, args.hot_session, 8, 8)
        if args.json:
            print(json.dumps(runs))
            return 0
        for r in runs:
            print(
                f"{'with' if r['lock'] else 'without'} the lock: {r['adds']:,} adds in "
                f"{args.hot_session:g} s, {r['events']:,} events audited, "
                f"{r['findings']:,} finding(s)"
            )
        return 0
    results = asyncio.run(run(args.postgres_url, args.rounds, args.calls))
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"PostgreSQL at {display_url(args.postgres_url)}: {args.rounds} rounds of {args.calls}")
    for name, r in results.items():
        low, high = r["ratio_range"]
        print(
            f"{name}: {r['with_lock_ms']:.3f} ms with the lock, {r['without_lock_ms']:.3f} ms "
            f"without; lock/no lock {r['ratio']:.3f} (rounds {low:.2f}-{high:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

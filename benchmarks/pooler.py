"""PostgreSQL behind PgBouncer and with a hot standby: what each costs (docs/scaling.md).

Builds a throwaway cluster of its own (tests/production/cluster.py: a primary, a
streaming standby and PgBouncer 1.18 in transaction pooling mode, on free local ports,
run as the ``postgres`` user) and removes it at the end. Needs PostgreSQL 15's server
binaries and ``pgbouncer``.

1. Writes: eight tasks of one process, each on its own session, ``add_items([item])``
   for ``--seconds``; items/s over all of them. Variants, interleaved round by round:
   ``direct`` (the default engine: statement caches on, timeouts set once per
   connection); ``direct, SET LOCAL`` (the same plus the per-transaction
   ``set_config(..., true)`` a pooled store sends); ``direct, pooler settings``
   (``?pooler=transaction`` on the direct URL: no statement caches, timeouts per
   transaction); ``PgBouncer`` (``?pooler=transaction`` through PgBouncer).
2. Reads: ``get_items(limit=20)`` of a 200-item session, one call at a time, median of
   ``--calls`` calls: from the primary directly, through PgBouncer, and from the
   standby (``read_engine=``; no write of the reader pending); and a read right after
   the reader's own write (the standby must have replayed it first) against the same
   read from the primary.

    python benchmarks/pooler.py [--rounds 3] [--seconds 3] [--calls 200] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import fmt_rate, fmt_seconds, make_items, render_table
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import EventStore
from eventstore.backends import Timeouts
from sessions import SQLAlchemySession, StoreSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.production.cluster import Cluster

TASKS = 8


async def write_rate(url: str, seconds: float, *, set_local: bool = False) -> float:
    items = make_items(64)
    async with EventStore(url) as store:
        if set_local:  # what a pooled store adds to each write transaction
            runner: Any = store._runner
            runner._bound_transaction = runner.dialect.transaction_setup(Timeouts())
        sessions = [StoreSession(f"w-{time.monotonic_ns()}-{n}", store) for n in range(TASKS)]
        for session in sessions:  # warm: the stream exists, the pool is full
            await session.add_items([items[0]])
        counts = [0] * TASKS
        deadline = time.monotonic() + seconds

        async def write(n: int) -> None:
            while time.monotonic() < deadline:
                await sessions[n].add_items([items[counts[n] % len(items)]])
                counts[n] += 1

        started = time.monotonic()
        await asyncio.gather(*(write(n) for n in range(TASKS)))
        return sum(counts) / (time.monotonic() - started)


async def read_latencies(cluster: Cluster, calls: int) -> dict[str, float]:
    name = "convstore"
    direct, standby = cluster.primary.url(name), cluster.standby.url(name)
    pooled = f"{cluster.bouncer_url}?pooler=transaction"
    items = make_items(200)
    async with EventStore(direct) as store:
        await StoreSession("reader", store).add_items(items)
    await asyncio.sleep(0.5)  # the standby has it
    found: dict[str, list[float]] = {}

    async def timed(label: str, session: Any, write: bool = False) -> None:
        if write:
            await session.add_items([items[0]])
        started = time.perf_counter()
        await session.get_items(limit=20)
        found.setdefault(label, []).append((time.perf_counter() - started) * 1000)

    replica = create_async_engine(standby.replace("postgresql://", "postgresql+asyncpg://"))
    async with (
        SQLAlchemySession("reader", db_url=direct) as on_primary,
        SQLAlchemySession("reader", db_url=pooled) as on_pooler,
        SQLAlchemySession("reader", db_url=direct, read_engine=replica) as on_standby,
        SQLAlchemySession("writer", db_url=direct, create_tables=True) as writer_primary,
        SQLAlchemySession("writer2", db_url=direct, read_engine=replica) as writer_standby,
    ):
        for session in (on_primary, on_pooler, on_standby, writer_primary, writer_standby):
            await session.get_items(limit=20)  # warm
        for _ in range(calls):
            await timed("primary, direct", on_primary)
            await timed("primary, PgBouncer", on_pooler)
            await timed("standby", on_standby)
            await timed("after own write: primary", writer_primary, write=True)
            await timed("after own write: standby", writer_standby, write=True)
    await replica.dispose()
    return {label: statistics.median(values) for label, values in found.items()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    cluster = Cluster()
    cluster.start()
    try:
        direct = cluster.primary_url
        variants = {
            "direct": (direct, False),
            "direct, SET LOCAL per write": (direct, True),
            "direct, pooler settings": (f"{direct}?pooler=transaction", False),
            "PgBouncer": (f"{cluster.bouncer_url}?pooler=transaction", False),
        }
        async with EventStore(direct) as store:
            await store.ensure_tables()
        rates: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                url, set_local = variants[name]
                rates[name].append(await write_rate(url, args.seconds, set_local=set_local))
                print(f"round {r + 1}: {name}: {rates[name][-1]:,.0f} items/s", file=sys.stderr)
        reads = await read_latencies(cluster, args.calls)
        lag = cluster.replay_lag_bytes()
    finally:
        cluster.stop()
    return {"writes": rates, "reads_ms": reads, "lag_bytes_at_end": lag}


def report(found: dict[str, Any]) -> str:
    base = statistics.median(found["writes"]["direct"])
    rows = [
        [
            name,
            fmt_rate(statistics.median(rounds), "items"),
            f"{min(rounds):,.0f}-{max(rounds):,.0f}",
            f"{statistics.median(rounds) / base:.2f}x",
        ]
        for name, rounds in found["writes"].items()
    ]
    writes = render_table(
        ["8 tasks, add_items([item])", "median", "rounds", "vs direct"], rows, right=(1, 2, 3)
    )
    reads = render_table(
        ["get_items(limit=20)", "median"],
        [[label, fmt_seconds(ms / 1000)] for label, ms in found["reads_ms"].items()],
        right=(1,),
    )
    return f"{writes}\n\n{reads}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parsed = parser.parse_args()
    results = asyncio.run(main(parsed))
    print(json.dumps(results) if parsed.json else report(results))

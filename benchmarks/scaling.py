"""What scaling past one writer costs on PostgreSQL (docs/scaling.md).

1. Session writes: ``add_items([item])`` through a session (the log plus every
   projection, as an application writes), from one writer process on one session,
   from four processes on four sessions, and from four processes on one session.
   Items/s over all writers; each figure the median of ``--rounds`` runs of
   ``--seconds``, the three variants interleaved round by round, on fresh tables.
2. Tailing the log: the latency of ``EventStore.read_all(after_position=p,
   limit=100)``, which first reads the position horizon (the transactions still in
   progress, eventstore/backends/postgres.py) and then one page below it, and decodes
   the events; the same two statements returning raw rows; the page alone, without a
   horizon (what a log whose positions need no horizon would pay); the horizon
   statement alone; and ``SELECT 1`` (one round trip). Each call is one transaction;
   ``p`` is a random position of a log of 20,000 events (``--quick``: 5,000); the
   calls are interleaved, each figure the median of ``--calls`` calls.

The script **drops the convstore tables** of the database it is given before every
run and at the end: point it at a scratch database.

    python benchmarks/scaling.py --postgres-url postgresql://USER@HOST/DB [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

from _common import (
    Status,
    benchmark_parser,
    describe_environment,
    display_url,
    drop_tables_at,
    environment,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    make_items,
    parse_benchmark_args,
    probe,
    render_table,
    say,
)
from sqlalchemy import Connection, select, text

from eventstore import EventStore, ItemsAdded, encode_items, schema
from eventstore.backends import dialect_for
from sessions import StoreSession

BACKENDS = ("postgres",)
WRITERS = 4
WARM_UP = 5
PAGE = 100

SINGLE = "1 writer, 1 session"
DISTINCT = f"{WRITERS} writers, {WRITERS} sessions"
SHARED = f"{WRITERS} writers, 1 session"
VARIANTS = ((SINGLE, 1, False), (DISTINCT, WRITERS, False), (SHARED, WRITERS, True))


# -- 1. session writes ----------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    url: str
    session_id: str
    seconds: float
    index: int


@dataclass(frozen=True)
class Outcome:
    index: int
    items: int
    started: float  # time.monotonic(): one clock for every process on Linux
    ended: float
    error: str = ""


async def _write(job: Job, barrier: Barrier) -> tuple[int, float, float]:
    items = make_items(64, seed=job.index)
    async with EventStore(job.url) as store:
        session = StoreSession(job.session_id, store)
        for n in range(WARM_UP):
            await session.add_items([items[n]])
        barrier.wait(timeout=300)
        count, started = 0, time.monotonic()
        deadline = started + job.seconds
        while True:
            await session.add_items([items[count % len(items)]])
            count += 1
            now = time.monotonic()
            if now >= deadline:
                return count, started, now


def worker(job: Job, barrier: Barrier, outcomes: Queue[Outcome]) -> None:
    try:
        count, started, ended = asyncio.run(_write(job, barrier))
        outcomes.put(Outcome(job.index, count, started, ended))
    except BaseException as error:
        barrier.abort()
        outcomes.put(Outcome(job.index, 0, 0.0, 0.0, f"{type(error).__name__}: {error}"))


def run_writers(url: str, session_ids: Sequence[str], seconds: float) -> tuple[int, float]:
    """One writer process per entry of ``session_ids``: (items, span in seconds)."""
    asyncio.run(drop_tables_at(url))
    asyncio.run(_create(url))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(session_ids))
    outcomes: Queue[Outcome] = context.Queue()
    processes = [
        context.Process(
            target=worker, args=(Job(url, sid, seconds, i), barrier, outcomes), daemon=True
        )
        for i, sid in enumerate(session_ids)
    ]
    for process in processes:
        process.start()
    try:
        results = [outcomes.get(timeout=seconds + 600) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
    errors = [r.error for r in results if r.error and "BrokenBarrierError" not in r.error]
    if errors or any(r.error for r in results):
        raise RuntimeError("; ".join(errors) or "a writer failed")
    span = max(r.ended for r in results) - min(r.started for r in results)
    return sum(r.items for r in results), span


async def _create(url: str) -> None:
    async with EventStore(url) as store:
        await store.ensure_tables()


@dataclass
class WriteResult:
    variant: str
    writers: int
    sessions: int
    items_per_second: float = 0.0  # median of the rounds
    rounds: list[float] = field(default_factory=list)


def measure_writes(
    url: str, rounds: int, seconds: float, show: Callable[[str], None]
) -> list[WriteResult]:
    found = {
        name: WriteResult(name, writers, 1 if shared else writers)
        for name, writers, shared in VARIANTS
    }
    for r in range(rounds):
        shift = r % len(VARIANTS)
        for name, writers, shared in VARIANTS[shift:] + VARIANTS[:shift]:
            show(f"session writes: {name}, round {r + 1}/{rounds}")
            ids = ["shared"] * writers if shared else [f"writer-{i}" for i in range(writers)]
            items, span = run_writers(url, ids, seconds)
            found[name].rounds.append(items / span)
    for result in found.values():
        result.items_per_second = statistics.median(result.rounds)
    return list(found.values())


# -- 2. tailing the log ---------------------------------------------------------------


@dataclass
class ReadResult:
    call: str
    median_ms: float
    calls: int


async def measure_tailing(url: str, events: int, calls: int, show: Callable[[str], None]) -> Any:
    await drop_tables_at(url)
    async with EventStore(url) as store:
        show(f"tailing: filling the log with {events:,} events")
        items = [encode_items([item]) for item in make_items(100)]
        per_append = 100
        for n in range(events // per_append):
            batch = [ItemsAdded(items=items[(n + i) % len(items)]) for i in range(per_append)]
            await store.append(f"session-{n % 200}", batch)
        await store.run(lambda conn: conn.execute(text("ANALYZE convstore_events")), write=True)
        positions = [
            row[0]
            for row in await store.run(
                lambda conn: conn.execute(select(schema.events.c.position)).all()
            )
        ]
        dialect = dialect_for("postgresql")
        e = schema.events

        def page(after: int, *, horizon: bool) -> Callable[[Connection], Any]:
            query = select(e).where(e.c.position > after).order_by(e.c.position).limit(PAGE)

            def read(conn: Connection) -> Any:
                if not horizon:
                    return conn.execute(query).all()
                bound = dialect.read_horizon(conn)
                return conn.execute(query.where(e.c.position < bound)).all()

            return read

        kinds: dict[str, Callable[[int], Any]] = {
            "read_all(limit=100)": lambda p: store.read_all(after_position=p, limit=PAGE),
            "horizon, then the page (rows)": lambda p: store.run(page(p, horizon=True)),
            "the page alone (rows)": lambda p: store.run(page(p, horizon=False)),
            "the horizon statement alone": lambda p: store.run(dialect.read_horizon),
            "SELECT 1 (one round trip)": lambda p: store.run(
                lambda conn: conn.execute(text("SELECT 1")).scalar_one()
            ),
        }
        timings: dict[str, list[float]] = {name: [] for name in kinds}
        rng = random.Random(0)
        show(f"tailing: {calls} calls of each")
        for n in range(calls + 10):
            after = rng.choice(positions)
            names = list(kinds)
            names = names[n % len(names) :] + names[: n % len(names)]
            for name in names:
                started = time.perf_counter()
                await kinds[name](after)
                if n >= 10:  # the first rounds warm the pool and the plans
                    timings[name].append(time.perf_counter() - started)
    await drop_tables_at(url)
    return [ReadResult(name, statistics.median(t) * 1000, len(t)) for name, t in timings.items()]


# -- output ---------------------------------------------------------------------------


def report(writes: Sequence[WriteResult], reads: Sequence[ReadResult]) -> str:
    single = writes[0].items_per_second
    rows = [
        [w.variant, fmt_rate(w.items_per_second, "items"), fmt_ratio(w.items_per_second / single)]
        for w in writes
    ]
    write_table = render_table(["add_items([item])", "items/s", "÷ 1 writer"], rows, right={1, 2})
    read_table = render_table(
        ["PostgreSQL, one transaction each", "median"],
        [[r.call, fmt_seconds(r.median_ms / 1000)] for r in reads],
        right={1},
    )
    return f"{write_table}\n\n{read_table}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__.split("\n\n")[0], BACKENDS)
    parser.add_argument("--seconds", type=float, help="each write run (default 3, --quick 1.5)")
    parser.add_argument("--rounds", type=int, help="write runs per variant (default 3, --quick 1)")
    parser.add_argument("--calls", type=int, help="reads of each kind (default 500, --quick 100)")
    args = parse_benchmark_args(parser, BACKENDS, argv)
    args.seconds = args.seconds or (1.5 if args.quick else 3.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.calls = args.calls or (100 if args.quick else 500)
    args.events = 5_000 if args.quick else 20_000
    return args  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    status = Status(enabled=sys.stdout.isatty() and not args.json)
    url = args.postgres_url
    reason, version = asyncio.run(probe(url))
    if reason is not None:
        say(status, f"skipped: {display_url(url)} unreachable ({reason})")
        return 0
    try:
        writes = measure_writes(url, args.rounds, args.seconds, status.show)
        reads = asyncio.run(measure_tailing(url, args.events, args.calls, status.show))
    finally:
        status.clear()
        asyncio.run(drop_tables_at(url))
    env = environment({"PostgreSQL": version})
    if args.json:
        document = {
            "benchmark": "scaling",
            "environment": env,
            "parameters": {
                "seconds": args.seconds,
                "rounds": args.rounds,
                "calls": args.calls,
                "events": args.events,
                "writers": WRITERS,
            },
            "writes": [asdict(w) for w in writes],
            "reads": [asdict(r) for r in reads],
        }
        print(json.dumps(document, indent=2))
        return 0
    print(describe_environment(env))
    print(
        f"Writes: median of {args.rounds} run(s) of {args.seconds:g} s per variant, writers in\n"
        f"separate processes. Reads: median of {args.calls} calls each, on a log of "
        f"{args.events:,} events."
    )
    print()
    print(report(writes, reads))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reads never replay the log: get_items(limit=20) at 100 items and at 1,000,000.

One session is filled to each size (items added 10,000 per call, not timed), then
``get_items(limit=20)`` and ``pop_item()`` + ``add_items`` (to keep the size) are timed;
the sizes are timed in alternate rounds, and the ratio column divides the median
latency at the large size by the one at the small size (1.00x: the history's length
costs nothing). On a SQLite file, replay is timed last: ``projections.rebuild`` of
the large session's database (every projection emptied and rebuilt from the log),
in items/s.

    python benchmarks/read_cost.py [--quick] [--json] [--backends ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import (
    Status,
    benchmark_parser,
    describe_environment,
    display_url,
    drop_tables_at,
    environment,
    fmt_ratio,
    fmt_seconds,
    make_items,
    parse_benchmark_args,
    probe,
    render_table,
    say,
)

from eventstore import EventStore
from projections import rebuild
from sessions.base import StoreSession
from sessions.sqlalchemy import SQLAlchemySession
from sessions.sqlite import SQLiteSession

BACKENDS = ("sqlite-file", "postgres", "mysql")
TITLES = {"sqlite-file": "SQLite file", "postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}
FILL_BATCH = 10_000
READS = 1000  # per size, over all rounds
POPS = 200
ROUNDS = 10


@dataclass
class Result:
    backend: str
    items: int
    get20_seconds: float  # median latency of get_items(limit=20)
    pop_seconds: float  # median latency of pop_item()


@dataclass
class Replay:
    backend: str
    items: int  # items added to the log (the fill and the re-adds after each pop)
    events: int
    seconds: list[float]  # each rebuild

    @property
    def items_per_second(self) -> float:
        return self.items / statistics.median(self.seconds)


REPLAYS = 3


async def time_replay(path: Path, items: int) -> Replay:
    """Rebuild every projection of the SQLite file at ``path`` from its log, REPLAYS times."""
    async with EventStore(path) as store:
        events = await store.count_events()
        seconds = []
        for _ in range(REPLAYS):
            started = time.perf_counter()
            await rebuild(store)
            seconds.append(time.perf_counter() - started)
    return Replay("sqlite-file", items, events, seconds)


async def fill(session: StoreSession, count: int, status: Status, label: str) -> None:
    pool = make_items(min(count, FILL_BATCH), seed=count)
    added = 0
    while added < count:
        batch = pool[: min(FILL_BATCH, count - added)]
        await session.add_items(batch)
        added += len(batch)
        status.show(f"{label}: filling {added:,}/{count:,} items")


async def time_reads(session: StoreSession, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        rows = await session.get_items(limit=20)
        times.append(time.perf_counter() - started)
        assert len(rows) == 20
    return times


async def time_pops(session: StoreSession, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        item = await session.pop_item()
        times.append(time.perf_counter() - started)
        await session.add_items([item])  # keep the size
    return times


async def run_backend(
    backend: str, sizes: Sequence[int], url: str | None, status: Status, replays: list[Replay]
) -> list[Result]:
    """Fill one session per size, then time them in alternate rounds (noise hits all)."""
    label = TITLES[backend]
    if url is not None:
        await drop_tables_at(url)
    with tempfile.TemporaryDirectory() as tmp:
        sessions: list[StoreSession] = []
        try:
            for size in sizes:
                if backend == "sqlite-file":
                    path = Path(tmp) / f"{size}.db"
                    sessions.append(SQLiteSession(f"read-cost-{size}", path))
                else:
                    assert url is not None
                    sessions.append(
                        SQLAlchemySession(f"read-cost-{size}", db_url=url, create_tables=True)
                    )
                await fill(sessions[-1], size, status, label)
            reads: list[list[float]] = [[] for _ in sizes]
            pops: list[list[float]] = [[] for _ in sizes]
            for round_ in range(ROUNDS):
                status.show(f"{label}: timing, round {round_ + 1}/{ROUNDS}")
                order = range(len(sizes)) if round_ % 2 == 0 else reversed(range(len(sizes)))
                for i in order:
                    reads[i] += await time_reads(sessions[i], READS // ROUNDS)
                    pops[i] += await time_pops(sessions[i], POPS // ROUNDS)
        finally:
            for session in sessions:
                await session.close()
            status.clear()
        if backend == "sqlite-file":
            status.show(f"{label}: replaying {sizes[-1]:,} items, {REPLAYS} times")
            replays.append(await time_replay(Path(tmp) / f"{sizes[-1]}.db", sizes[-1] + POPS))
            status.clear()
    if url is not None:
        await drop_tables_at(url)
    return [
        Result(backend, size, statistics.median(reads[i]), statistics.median(pops[i]))
        for i, size in enumerate(sizes)
    ]


def render(results: list[Result]) -> str:
    rows = []
    by_backend: dict[str, list[Result]] = {}
    for r in results:
        by_backend.setdefault(r.backend, []).append(r)
    for backend, found in by_backend.items():
        small, large = found[0], found[-1]
        rows.append(
            [
                TITLES[backend],
                "get_items(limit=20)",
                fmt_seconds(small.get20_seconds),
                fmt_seconds(large.get20_seconds),
                fmt_ratio(large.get20_seconds / small.get20_seconds),
            ]
        )
        rows.append(
            [
                "",
                "pop_item()",
                fmt_seconds(small.pop_seconds),
                fmt_seconds(large.pop_seconds),
                fmt_ratio(large.pop_seconds / small.pop_seconds),
            ]
        )
    sizes = sorted({r.items for r in results})
    table = render_table(
        [
            "backend",
            "call",
            f"at {sizes[0]:,} items",
            f"at {sizes[-1]:,} items",
            "large ÷ small",
        ],
        rows,
        right={2, 3, 4},
    )
    return (
        f"{table}\n\nMedian latency of {READS:,} reads and {POPS} pops per size, in "
        f"{ROUNDS} alternate rounds; 'large ÷ small' near 1.00x means the cost does not "
        "grow with the history."
    )


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = (100, 100_000) if args.quick else (100, 1_000_000)
    status = Status()
    urls = {"postgres": args.postgres_url, "mysql": args.mysql_url}
    servers: dict[str, str] = {}
    skipped: dict[str, str] = {}
    results: list[Result] = []
    replays: list[Replay] = []
    for backend in args.backends:
        url = urls.get(backend)
        if url is not None:
            reason, version = await probe(url)
            if reason is not None:
                skipped[backend] = f"{display_url(url)}: {reason}"
                say(status, f"skipped {TITLES[backend]}: {skipped[backend]}", quiet=args.json)
                continue
            servers[backend] = version
        results.extend(await run_backend(backend, sizes, url, status, replays))
    env = environment(servers)
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "read_cost",
                    "environment": env,
                    "parameters": {"sizes": sizes, "reads": READS, "pops": POPS},
                    "skipped": skipped,
                    "results": [asdict(r) for r in results],
                    "replay": [
                        asdict(r) | {"items_per_second": r.items_per_second} for r in replays
                    ],
                },
                indent=2,
            )
        )
    else:
        print(describe_environment(env))
        print()
        print(render(results) if results else "no backend could be measured")
        for r in replays:
            rates = sorted(r.items / t for t in r.seconds)
            print(
                f"\nReplay ({TITLES[r.backend]}, projections.rebuild): {r.items:,} items in "
                f"{r.events:,} events, {r.items_per_second:,.0f} items/s (median of "
                f"{len(r.seconds)}; {rates[0]:,.0f}-{rates[-1]:,.0f})"
            )
    return 0 if results else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__.split("\n\n")[0], BACKENDS)
    # Filling a million items takes MariaDB several minutes: it runs only when asked for.
    parser.set_defaults(backends="sqlite-file,postgres")
    return parse_benchmark_args(parser, BACKENDS, argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""Latency of a live update: an append commits in one process, a subscriber in another
receives it (``EventStore.subscribe``, docs/subscriptions.md).

A writer process appends one event at a time, a pause between appends so that each
arrives on its own (not in a page with others), and notes the monotonic clock as each
``append`` returns, i.e. once its commit is acknowledged. A subscriber process notes
the same clock (CLOCK_MONOTONIC is one clock for every process of the machine) as it
receives each event. The latency of an event is received - acknowledged; it can be
negative where the subscriber hears of the commit before the writer does (PostgreSQL's
NOTIFY is sent at commit). Variants:

* ``sqlite-file``: woken by SQLite's data version (checked every 20 ms);
* ``postgres``: woken by LISTEN/NOTIFY (poll every 1 s as the safety net);
* ``postgres-poll``: ``listen=False`` (behind a transaction-mode pooler): polling
  alone, every 0.25 s;
* ``mysql``: MariaDB has no notice: polling, every 0.25 s (the default there);
* ``postgres-stalled``: a third process holds a transaction open (it has written,
  then stops, as a paused client would) while the writer appends: a tail reads only
  below the oldest transaction in progress, so the events wait until the server ends
  the stalled one (``idle_in_transaction_session_timeout``, 5 s on the connections of
  a store; docs/subscriptions.md).

    python benchmarks/subscribe_latency.py [--quick] [--json] [--backends ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

from _common import (
    benchmark_parser,
    describe_environment,
    display_url,
    drop_tables_at,
    environment,
    parse_benchmark_args,
    probe,
    render_table,
)

from eventstore import EventStore, ItemsAdded, encode_items

VARIANTS = ("sqlite-file", "postgres", "postgres-poll", "mysql", "postgres-stalled")
_spawn = multiprocessing.get_context("spawn")


def _subscriber(
    target: str, listen: bool, poll: float | None, count: int, ready: EventType, out: Queue[Any]
) -> None:
    async def main() -> None:
        async with EventStore(target, projectors=()) as store:
            after = await store.head_position()
            received: dict[int, int] = {}
            async with store.subscribe(
                after_position=after, listen=listen, poll_interval=poll
            ) as events:
                ready.set()
                async for event in events:
                    received[event.version] = time.monotonic_ns()
                    if len(received) == count:
                        break
            out.put(("received", received))

    asyncio.run(main())


def _writer(target: str, count: int, pause: float, start: EventType, out: Queue[Any]) -> None:
    async def main() -> None:
        async with EventStore(target, projectors=()) as store:
            await store.append("warm-up", [ItemsAdded(items=encode_items(["w"]))])
            start.wait(60)
            acked: dict[int, int] = {}
            for n in range(count):
                result = await store.append("live", [ItemsAdded(items=encode_items([n]))])
                acked[result.last_version] = time.monotonic_ns()
                await asyncio.sleep(pause)
            out.put(("acked", acked))

    asyncio.run(main())


def _staller(target: str, stalled: EventType, release: EventType) -> None:
    """Write inside a transaction, then stop (as a paused client), until released or
    until the server ends the session (the store's idle-in-transaction timeout)."""

    async def main() -> None:
        async with EventStore(target, projectors=()) as store:
            await store.ensure_tables()

            def stall(conn: Any) -> None:
                store.reserve_positions(conn, 1)  # takes a transaction id, as appends do
                stalled.set()
                release.wait(60)

            try:
                await store.run(stall, write=True)
            except Exception as error:  # ended by the server: what is measured
                print(f"  (stalled transaction ended: {type(error).__name__})", file=sys.stderr)

    asyncio.run(main())


def measure(
    variant: str, target: str, count: int, pause: float
) -> tuple[list[float], dict[str, Any]]:
    """Latencies in ms of ``count`` events, and notes about the run."""
    listen = variant != "postgres-poll"
    poll = 0.25 if variant == "postgres-poll" else None
    ready, start = _spawn.Event(), _spawn.Event()
    out: Queue[Any] = _spawn.Queue()
    subscriber = _spawn.Process(target=_subscriber, args=(target, listen, poll, count, ready, out))
    writer = _spawn.Process(target=_writer, args=(target, count, pause, start, out))
    stall_release = _spawn.Event()
    staller = None
    subscriber.start()
    if not ready.wait(60):
        raise RuntimeError("the subscriber did not start")
    writer.start()
    if variant == "postgres-stalled":
        stalled = _spawn.Event()
        staller = _spawn.Process(target=_staller, args=(target, stalled, stall_release))
        staller.start()
        stalled.wait(60)
    start.set()
    found = dict([out.get(timeout=600), out.get(timeout=600)])
    stall_release.set()
    for process in (subscriber, writer, staller):
        if process is not None:
            process.join(60)
    acked, received = found["acked"], found["received"]
    latencies = [(received[v] - acked[v]) / 1e6 for v in sorted(acked)]
    return latencies, {"events": len(latencies), "pause_ms": pause * 1000}


def summarise(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser: argparse.ArgumentParser = benchmark_parser(__doc__.split("\n")[0], VARIANTS)
    parser.add_argument("--events", type=int, default=0, help="events per variant")
    args = parse_benchmark_args(parser, VARIANTS, argv)
    count = args.events or (40 if args.quick else 200)
    servers = {"postgres": args.postgres_url, "mysql": args.mysql_url}
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.backends:
            server = "mysql" if variant == "mysql" else "postgres"
            target = str(Path(tmp) / f"{variant}.db")
            if variant != "sqlite-file":
                target = servers[server]
                reason, _ = asyncio.run(probe(target))
                if reason is not None:
                    print(f"{variant}: skipped ({display_url(target)}: {reason})")
                    continue
                asyncio.run(drop_tables_at(target))
            events = min(count, 20) if variant == "postgres-stalled" else count
            pause = 0.25 if variant == "postgres-stalled" else 0.02
            latencies, notes = measure(variant, target, events, pause)
            figures = summarise(latencies)
            results[variant] = {**figures, **notes}
            rows.append(
                [
                    variant,
                    str(len(latencies)),
                    f"{figures['median_ms']:.1f}",
                    f"{figures['p90_ms']:.1f}",
                    f"{figures['min_ms']:.1f}",
                    f"{figures['max_ms']:.1f}",
                ]
            )
            if variant != "sqlite-file":
                asyncio.run(drop_tables_at(target))
    if args.json:
        print(json.dumps({"environment": environment(servers), "results": results}, indent=2))
        return
    print(describe_environment(environment(servers)))
    print("commit acknowledged -> received by a subscriber in another process (ms)")
    print(render_table(["variant", "events", "median", "p90", "min", "max"], rows))


if __name__ == "__main__":
    main()

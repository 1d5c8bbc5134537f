"""Usage queries at 10 and 1,000 turns, side by side with the SDK's AdvancedSQLiteSession.

Each session gets N turns of four items (user, assistant, tool call, tool output) and
the usage of each turn: ours the way the Runner records it (``add_items`` with its
``wrapper``), the SDK's with ``store_run_usage`` after each turn (not timed). Then
each query is timed on both, in alternate rounds, on SQLite files; the ratio is the
SDK's median latency divided by ours (above 1: convstore is faster). PostgreSQL rows
show our AdvancedSQLAlchemySession alone (the SDK's class exists on SQLite only).

    python benchmarks/usage.py [--quick] [--json] [--backends sqlite-file,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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
from agents.extensions.memory import AdvancedSQLiteSession as SdkAdvancedSession
from agents.run_context import RunContextWrapper
from agents.usage import Usage

from sessions import AdvancedSQLAlchemySession, AdvancedSQLiteSession

BACKENDS = ("sqlite-file", "postgres")
TITLES = {"sqlite-file": "SQLite file", "postgres": "PostgreSQL"}
ROUNDS = 10
CALLS = 200  # per query, size and side, over all rounds

Query = Callable[[Any], Awaitable[Any]]
QUERIES: dict[str, Query] = {
    "get_session_usage()": lambda s: s.get_session_usage(),
    "get_session_usage('main')": lambda s: s.get_session_usage("main"),
    "get_turn_usage(n // 2)": lambda s: s.get_turn_usage(s.bench_turns // 2),
    "get_turn_usage()": lambda s: s.get_turn_usage(),
}


@dataclass
class Result:
    backend: str
    query: str
    turns: int
    ours_seconds: float
    sdk_seconds: float | None


def turn_usage(n: int) -> Usage:
    return Usage(requests=2, input_tokens=100 + n, output_tokens=20, total_tokens=120 + n)


async def fill_ours(session: Any, turns: int, status: Status, label: str) -> None:
    items = make_items(4 * turns)
    for n in range(turns):
        wrapper: RunContextWrapper[None] = RunContextWrapper(context=None)
        await session.add_items(items[4 * n : 4 * n + 1], wrapper=wrapper)
        wrapper.usage.add(turn_usage(n))
        await session.add_items(items[4 * n + 1 : 4 * n + 4], wrapper=wrapper)
        if n % 100 == 0:
            status.show(f"{label}: filling ours, {n:,}/{turns:,} turns")
    session.bench_turns = turns


async def fill_sdk(session: Any, turns: int, status: Status, label: str) -> None:
    items = make_items(4 * turns)
    for n in range(turns):
        await session.add_items(items[4 * n : 4 * n + 4])
        result = SimpleNamespace(context_wrapper=SimpleNamespace(usage=turn_usage(n)))
        await session.store_run_usage(result)
        if n % 100 == 0:
            status.show(f"{label}: filling the SDK's, {n:,}/{turns:,} turns")
    session.bench_turns = turns


async def time_calls(session: Any, query: Query, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await query(session)
        times.append(time.perf_counter() - started)
    return times


async def check_same(ours: Any, sdk: Any) -> None:
    """Both sides answer the same figures (the benchmark compares like with like)."""
    a, b = await ours.get_session_usage(), await sdk.get_session_usage()
    assert a == b, (a, b)
    turns = await ours.get_turn_usage()
    assert len(turns) == len(await sdk.get_turn_usage()) == ours.bench_turns


async def run_backend(
    backend: str, sizes: Sequence[int], url: str | None, status: Status
) -> list[Result]:
    label = TITLES[backend]
    if url is not None:
        await drop_tables_at(url)
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        pairs: list[tuple[Any, Any]] = []
        try:
            for size in sizes:
                ours: Any
                sdk: Any = None
                if backend == "sqlite-file":
                    ours = AdvancedSQLiteSession(session_id="u", db_path=Path(tmp) / f"{size}.db")
                    sdk = SdkAdvancedSession(
                        session_id="u",
                        db_path=str(Path(tmp) / f"{size}-sdk.db"),
                        create_tables=True,
                    )
                else:
                    assert url is not None
                    ours = AdvancedSQLAlchemySession(f"u{size}", db_url=url, create_tables=True)
                pairs.append((ours, sdk))
                await fill_ours(ours, size, status, f"{label} {size:,}")
                if sdk is not None:
                    await fill_sdk(sdk, size, status, f"{label} {size:,}")
                    await check_same(ours, sdk)
            for name, query in QUERIES.items():
                times: list[tuple[list[float], list[float]]] = [([], []) for _ in sizes]
                for round_ in range(ROUNDS):
                    status.show(f"{label}: {name}, round {round_ + 1}/{ROUNDS}")
                    for i, (ours, sdk) in enumerate(pairs):
                        sides = [(ours, times[i][0]), (sdk, times[i][1])]
                        for session, into in sides if round_ % 2 == 0 else reversed(sides):
                            if session is not None:
                                into += await time_calls(session, query, CALLS // ROUNDS)
                for size, (mine, theirs) in zip(sizes, times, strict=True):
                    results.append(
                        Result(
                            backend,
                            name,
                            size,
                            statistics.median(mine),
                            statistics.median(theirs) if theirs else None,
                        )
                    )
        finally:
            for ours, sdk in pairs:
                await ours.close()
                if sdk is not None:
                    sdk.close()
            status.clear()
    if url is not None:
        await drop_tables_at(url)
    return results


def render(results: list[Result]) -> str:
    sizes = sorted({r.turns for r in results})
    small, large = sizes[0], sizes[-1]
    by_key = {(r.backend, r.query, r.turns): r for r in results}
    rows = []
    for backend in dict.fromkeys(r.backend for r in results):
        for query in QUERIES:
            a, b = by_key[(backend, query, small)], by_key[(backend, query, large)]
            sdk = "—" if b.sdk_seconds is None else fmt_seconds(b.sdk_seconds)
            ratio = "—" if b.sdk_seconds is None else fmt_ratio(b.sdk_seconds / b.ours_seconds)
            sdk_growth = (
                "—"
                if a.sdk_seconds is None or b.sdk_seconds is None
                else fmt_ratio(b.sdk_seconds / a.sdk_seconds)
            )
            rows.append(
                [
                    TITLES[backend],
                    query,
                    fmt_seconds(b.ours_seconds),
                    sdk,
                    ratio,
                    fmt_ratio(b.ours_seconds / a.ours_seconds),
                    sdk_growth,
                ]
            )
    table = render_table(
        [
            "backend",
            "query",
            f"ours at {large:,} turns",
            f"SDK at {large:,}",
            "SDK ÷ ours",
            f"ours {large:,} ÷ {small:,}",
            f"SDK {large:,} ÷ {small:,}",
        ],
        rows,
        right={2, 3, 4, 5, 6},
    )
    return (
        f"{table}\n\nMedian latency of {CALLS} calls per query, size and side, in {ROUNDS} "
        "alternate rounds. 'SDK ÷ ours' above 1.00x: convstore is faster; the growth "
        "columns near 1.00x: the query does not grow with the number of turns "
        "(get_turn_usage() lists every turn, so it grows on both sides)."
    )


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = (10, 200) if args.quick else (10, 1000)
    status = Status()
    servers: dict[str, str] = {}
    skipped: dict[str, str] = {}
    results: list[Result] = []
    for backend in args.backends:
        url = args.postgres_url if backend == "postgres" else None
        if url is not None:
            reason, version = await probe(url)
            if reason is not None:
                skipped[backend] = f"{display_url(url)}: {reason}"
                say(status, f"skipped {TITLES[backend]}: {skipped[backend]}", quiet=args.json)
                continue
            servers[backend] = version
        results.extend(await run_backend(backend, sizes, url, status))
    env = environment(servers)
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "usage",
                    "environment": env,
                    "parameters": {"sizes": sizes, "calls": CALLS, "rounds": ROUNDS},
                    "skipped": skipped,
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    else:
        print(describe_environment(env))
        print()
        print(render(results) if results else "no backend could be measured")
    return 0 if results else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__.split("\n\n")[0], BACKENDS)
    return parse_benchmark_args(parser, BACKENDS, argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

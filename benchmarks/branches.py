"""Branches side by side with the SDK's AdvancedSQLiteSession, in one run.

    python benchmarks/branches.py [--quick] [--json] [--backends sqlite,postgres]

For each history size, both sessions hold the same realistic items (a user message,
an assistant message, a tool call and its output per turn). Timed, as the median of
several repetitions: ``create_branch_from_turn`` from the last turn (the SDK copies
the rows before it; we append one event), ``get_items(limit=20)`` and a 4-item
``add_items`` on a branch of the largest history, ``pop_item`` at 10,000 items and
``get_conversation_turns`` at 1,000 turns. Ratios are SDK time / convstore time
(above 1: convstore is faster). On PostgreSQL only convstore runs (the SDK's class
exists on SQLite only).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    Status,
    async_url,
    benchmark_parser,
    drop_tables_at,
    fmt_ratio,
    fmt_seconds,
    make_items,
    parse_benchmark_args,
    render_table,
    say,
)
from sqlalchemy import text

from sessions import AdvancedSQLAlchemySession, AdvancedSQLiteSession

BACKENDS = ("sqlite", "postgres")


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    """Median seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def fill(session: Any, count: int) -> None:
    items = make_items(count, seed=count)
    for start in range(0, count, 400):
        await session.add_items(items[start : start + 400])
    engine = getattr(session, "engine", None)
    if engine is not None and engine.dialect.name == "postgresql":
        # Fresh statistics, as autovacuum would have them on a table this size: the
        # first plans of a just-filled table are made for an empty one.
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE"))


async def measure(session: Any, size: int, repeat: int, *, branch_reads: bool) -> dict[str, float]:
    """Branch creation at ``size`` items; reads and writes on a branch if asked."""
    await fill(session, size)
    turns = size // 4
    names = iter(range(10**6))

    async def branch() -> None:
        await session.create_branch_from_turn(turns, f"b{next(names)}")
        await session.switch_to_branch("main")

    found = {f"branch at {size:,}": await timed(branch, repeat)}
    if branch_reads:
        await session.create_branch_from_turn(turns, "reading")
        found[f"get_items(limit=20) on a branch, {size:,}"] = await timed(
            lambda: session.get_items(limit=20), repeat * 5
        )
        turn = make_items(4, seed=7)
        found[f"add_items(4) on a branch, {size:,}"] = await timed(
            lambda: session.add_items(turn), repeat * 5
        )
        await session.switch_to_branch("main")
    return found


async def pops(session: Any, repeat: int) -> float:
    await fill(session, 10_000)
    return await timed(session.pop_item, repeat * 5)


async def turns_read(session: Any, repeat: int) -> float:
    await fill(session, 4_000)  # 1,000 turns
    return await timed(session.get_conversation_turns, repeat)


async def run_sqlite(
    sizes: Sequence[int], repeat: int, status: Status
) -> dict[str, dict[str, float]]:
    from agents.extensions.memory import AdvancedSQLiteSession as SDKAdvanced

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        n = iter(range(10**6))

        def ours() -> AdvancedSQLiteSession:
            return AdvancedSQLiteSession(session_id=f"s{next(n)}", db_path=Path(tmp) / "ours.db")

        def sdk() -> Any:
            return SDKAdvanced(
                session_id=f"s{next(n)}", db_path=str(Path(tmp) / "sdk.db"), create_tables=True
            )

        for label, make in (("convstore", ours), ("sdk", sdk)):
            found: dict[str, float] = {}
            for size in sizes:
                status.show(f"sqlite {label}: {size:,} items")
                session = make()
                found |= await measure(session, size, repeat, branch_reads=size == sizes[-1])
                await _close(session)
            session = make()
            found["pop_item at 10,000"] = await pops(session, repeat)
            await _close(session)
            session = make()
            found["get_conversation_turns at 1,000 turns"] = await turns_read(session, repeat)
            await _close(session)
            results[label] = found
    return results


async def run_postgres(
    url: str, sizes: Sequence[int], repeat: int, status: Status
) -> dict[str, float]:
    await drop_tables_at(url)
    n = iter(range(10**6))

    def ours() -> AdvancedSQLAlchemySession:
        return AdvancedSQLAlchemySession(f"s{next(n)}", db_url=async_url(url), create_tables=True)

    found: dict[str, float] = {}
    for size in sizes:
        status.show(f"postgres convstore: {size:,} items")
        session = ours()
        found |= await measure(session, size, repeat, branch_reads=size == sizes[-1])
        await session.close()
    session = ours()
    found["pop_item at 10,000"] = await pops(session, repeat)
    await session.close()
    session = ours()
    found["get_conversation_turns at 1,000 turns"] = await turns_read(session, repeat)
    await session.close()
    await drop_tables_at(url)
    return found


async def _close(session: Any) -> None:
    result = session.close()
    if asyncio.iscoroutine(result):
        await result


async def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(__doc__ or "", BACKENDS)
    args = parse_benchmark_args(parser, BACKENDS, argv)
    sizes = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    repeat = 3 if args.quick else 5
    status = Status(enabled=not args.json)
    report: dict[str, Any] = {"sizes": list(sizes)}
    if "sqlite" in args.backends:
        sqlite = await run_sqlite(sizes, repeat, status)
        report["sqlite"] = sqlite
        rows = [
            (
                case,
                fmt_seconds(sqlite["convstore"][case]),
                fmt_seconds(sqlite["sdk"][case]),
                fmt_ratio(sqlite["sdk"][case] / sqlite["convstore"][case]),
            )
            for case in sqlite["convstore"]
        ]
        say(status, "SQLite file: convstore AdvancedSQLiteSession vs the SDK's", quiet=args.json)
        say(
            status,
            render_table(["case", "convstore", "SDK", "ratio"], rows, right=(1, 2, 3)),
            quiet=args.json,
        )
    if "postgres" in args.backends:
        pg = await run_postgres(args.postgres_url, sizes, repeat, status)
        report["postgres"] = pg
        say(status, "\nPostgreSQL: convstore AdvancedSQLAlchemySession", quiet=args.json)
        say(
            status,
            render_table(
                ["case", "convstore"], [(k, fmt_seconds(v)) for k, v in pg.items()], right=(1,)
            ),
            quiet=args.json,
        )
    status.clear()
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

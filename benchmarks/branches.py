"""Branches side by side with the SDK's AdvancedSQLiteSession, in one run.

    python benchmarks/branches.py [--quick] [--json] [--backends sqlite,postgres]

For each history size, both sessions hold the same realistic items (a user message,
an assistant message, a tool call and its output per turn). Timed, as the median of
several repetitions: ``create_branch_from_turn`` from the last turn (the SDK copies
the rows before it; we append one event), ``get_items(limit=20)`` and a 4-item
``add_items`` on a branch of the largest history, ``pop_item`` at 10,000 items and
``get_conversation_turns`` at 1,000 turns. The two sides hold their sessions at the
same time and take turns call by call (the side that goes first changes every call),
so machine noise hits both alike. Ratios are SDK time / convstore time (above 1:
convstore is faster). On PostgreSQL only convstore runs (the SDK's class
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


Call = Callable[[], Awaitable[Any]]


async def alternate(calls: dict[str, Call], repeat: int) -> dict[str, float]:
    """Median seconds of ``repeat`` calls of each side, the sides taking turns call by
    call and the side that goes first changing every time (noise hits both alike)."""
    times: dict[str, list[float]] = {side: [] for side in calls}
    sides = list(calls)
    for r in range(repeat):
        for side in sides if r % 2 == 0 else sides[::-1]:
            started = time.perf_counter()
            await calls[side]()
            times[side].append(time.perf_counter() - started)
    return {side: statistics.median(found) for side, found in times.items()}


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


Cases = dict[str, dict[str, float]]  # side -> case -> median seconds


def _record(into: Cases, case: str, found: dict[str, float]) -> None:
    for side, seconds in found.items():
        into.setdefault(side, {})[case] = seconds


async def measure(sessions: dict[str, Any], size: int, repeat: int, *, branch_reads: bool) -> Cases:
    """Branch creation at ``size`` items, the sides alternating; reads and writes on a
    branch if asked."""
    for session in sessions.values():
        await fill(session, size)
    turns = size // 4
    names = iter(range(10**6))
    found: Cases = {}

    def brancher(session: Any) -> Call:
        async def branch() -> None:
            await session.create_branch_from_turn(turns, f"b{next(names)}")
            await session.switch_to_branch("main")

        return branch

    branches = {side: brancher(s) for side, s in sessions.items()}
    _record(found, f"branch at {size:,}", await alternate(branches, repeat))
    if branch_reads:
        for session in sessions.values():
            await session.create_branch_from_turn(turns, "reading")
        reads = {side: lambda s=s: s.get_items(limit=20) for side, s in sessions.items()}
        case = f"get_items(limit=20) on a branch, {size:,}"
        _record(found, case, await alternate(reads, repeat * 5))
        turn = make_items(4, seed=7)
        adds = {side: lambda s=s: s.add_items(turn) for side, s in sessions.items()}
        _record(found, f"add_items(4) on a branch, {size:,}", await alternate(adds, repeat * 5))
        for session in sessions.values():
            await session.switch_to_branch("main")
    return found


async def pops(sessions: dict[str, Any], repeat: int) -> dict[str, float]:
    for session in sessions.values():
        await fill(session, 10_000)
    return await alternate({side: s.pop_item for side, s in sessions.items()}, repeat * 5)


async def turns_read(sessions: dict[str, Any], repeat: int) -> dict[str, float]:
    for session in sessions.values():
        await fill(session, 4_000)  # 1,000 turns
    calls = {side: s.get_conversation_turns for side, s in sessions.items()}
    return await alternate(calls, repeat)


async def run_sides(
    makers: dict[str, Callable[[], Any]], sizes: Sequence[int], repeat: int, status: Status
) -> Cases:
    """Every case on fresh sessions of each side, the sides timed in alternation."""
    found: Cases = {}

    async def on_fresh_sessions(what: Callable[[dict[str, Any]], Awaitable[Any]]) -> Any:
        sessions = {side: make() for side, make in makers.items()}
        try:
            return await what(sessions)
        finally:
            for session in sessions.values():
                await _close(session)

    for size in sizes:
        status.show(f"{' and '.join(makers)}: {size:,} items")
        cases = await on_fresh_sessions(
            lambda s, size=size: measure(s, size, repeat, branch_reads=size == sizes[-1])
        )
        for side, values in cases.items():
            found.setdefault(side, {}).update(values)
    status.show(f"{' and '.join(makers)}: pops and turns")
    _record(found, "pop_item at 10,000", await on_fresh_sessions(lambda s: pops(s, repeat)))
    turns = await on_fresh_sessions(lambda s: turns_read(s, repeat))
    _record(found, "get_conversation_turns at 1,000 turns", turns)
    return found


async def run_sqlite(sizes: Sequence[int], repeat: int, status: Status) -> Cases:
    from agents.extensions.memory import AdvancedSQLiteSession as SDKAdvanced

    with tempfile.TemporaryDirectory() as tmp:
        n = iter(range(10**6))

        def ours() -> AdvancedSQLiteSession:
            return AdvancedSQLiteSession(session_id=f"s{next(n)}", db_path=Path(tmp) / "ours.db")

        def sdk() -> Any:
            return SDKAdvanced(
                session_id=f"s{next(n)}", db_path=str(Path(tmp) / "sdk.db"), create_tables=True
            )

        return await run_sides({"convstore": ours, "sdk": sdk}, sizes, repeat, status)


async def run_postgres(
    url: str, sizes: Sequence[int], repeat: int, status: Status
) -> dict[str, float]:
    await drop_tables_at(url)
    n = iter(range(10**6))

    def ours() -> AdvancedSQLAlchemySession:
        return AdvancedSQLAlchemySession(f"s{next(n)}", db_url=async_url(url), create_tables=True)

    found = await run_sides({"convstore": ours}, sizes, repeat, status)
    await drop_tables_at(url)
    return found["convstore"]


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

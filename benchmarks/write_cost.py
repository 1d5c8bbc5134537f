"""Where one writer's time goes on a SQLite file, side by side with the Agents SDK's
``SQLiteSession``: per call of ``add_items([item])``, ``add_items`` of a 4-item turn and
``pop_item()``, the wall time, the CPU time of the caller's thread (the event loop) and
the CPU time of the whole process (the caller plus the thread that runs the
transaction), each side's median over alternating rounds.

An empty write through convstore's runner beside ``asyncio.to_thread`` of nothing
gives the cost of the hand-offs to a thread and back alone.

Run on the directory given (``--dir``, default: a temporary directory on the disk) and
on ``/dev/shm`` (memory: ``fsync`` costs nothing there), the two tell apart what the
commit's ``fsync`` costs and what each side's own work costs: on ``/dev/shm`` the wall
time is the CPU time. Both sides use WAL with ``synchronous=FULL``; convstore also runs
on SQLite's ``:memory:``, where it runs each transaction on the caller's thread, to show
its own work without a thread or a file.

    python benchmarks/write_cost.py [--rounds N] [--calls N] [--dir PATH] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import describe_environment, environment, make_items, render_table
from agents.memory import SQLiteSession as SdkSQLiteSession

from eventstore.backends.sqlite import ThreadRunner
from sessions import SQLiteSession, release_sqlite_files

TURN = 4


@dataclass
class Split:
    """Per call, in microseconds: wall, the caller thread's CPU, the process's CPU."""

    wall: float
    caller: float
    process: float


async def one_round(session: Any, op: str, calls: int, items: Sequence[Any], at: int) -> Split:
    gc.collect()
    wall, caller, process = time.perf_counter(), time.thread_time(), time.process_time()
    for n in range(calls):
        if op == "add":
            await session.add_items([items[(at + n) % len(items)]])
        elif op == "turn":
            start = (at + n * TURN) % (len(items) - TURN)
            await session.add_items(list(items[start : start + TURN]))
        elif await session.pop_item() is None:
            raise RuntimeError("nothing to pop")
    return Split(
        (time.perf_counter() - wall) / calls * 1e6,
        (time.thread_time() - caller) / calls * 1e6,
        (time.process_time() - process) / calls * 1e6,
    )


async def fill(session: Any, items: Sequence[Any], rounds: int, calls: int) -> None:
    """Warm ``session`` and give it enough items for every pop of the rounds."""
    for start in range(0, (rounds * calls + 4) * 2, TURN):
        await session.add_items(list(items[start % 1996 : start % 1996 + TURN]))


async def measure(directory: Path, rounds: int, calls: int) -> dict[str, dict[str, Split]]:
    """``{operation: {side: median split}}`` for the two sides on ``directory``."""
    items = make_items(2000, seed=11)
    ours = SQLiteSession("writer", directory / "ours.db")
    sdk = SdkSQLiteSession("writer", directory / "sdk.db")
    sides = {"convstore": ours, "SDK": sdk}
    out: dict[str, dict[str, Split]] = {}
    try:
        for session in sides.values():
            await fill(session, items, rounds, calls)
        for op in ("add", "turn", "pop"):
            found: dict[str, list[Split]] = {name: [] for name in sides}
            for r in range(rounds):
                order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]
                for name, session in order:
                    found[name].append(await one_round(session, op, calls, items, r * calls))
            out[op] = {name: median(splits) for name, splits in found.items()}
    finally:
        await ours.close()
        sdk.close()
        release_sqlite_files()
    return out


async def in_memory(rounds: int, calls: int) -> dict[str, Split]:
    """convstore alone on ``:memory:`` (each transaction on the caller's thread)."""
    items = make_items(2000, seed=11)
    session = SQLiteSession("writer")
    out: dict[str, Split] = {}
    try:
        await fill(session, items, rounds, calls)
        for op in ("add", "turn", "pop"):
            splits = [await one_round(session, op, calls, items, r * calls) for r in range(rounds)]
            out[op] = median(splits)
    finally:
        await session.close()
    return out


async def hand_offs(directory: Path, calls: int) -> dict[str, float]:
    """Microseconds per call of an empty write transaction through convstore's SQLite
    runner (``BEGIN IMMEDIATE``, ``COMMIT`` of nothing: the hand-off to its thread and
    back) and of ``asyncio.to_thread`` of nothing (what the SDK's sessions use)."""
    runner = ThreadRunner(str(directory / "hand-offs.db"))
    try:
        await runner.run(lambda conn: None, write=True)
        started = time.perf_counter()
        for _ in range(calls):
            await runner.run(lambda conn: None, write=True)
        ours = (time.perf_counter() - started) / calls * 1e6
        started = time.perf_counter()
        for _ in range(calls):
            await asyncio.to_thread(lambda: None)
        theirs = (time.perf_counter() - started) / calls * 1e6
    finally:
        await runner.close()
    return {"convstore runner, empty write": ours, "asyncio.to_thread, nothing": theirs}


def median(splits: Sequence[Split]) -> Split:
    return Split(
        statistics.median(s.wall for s in splits),
        statistics.median(s.caller for s in splits),
        statistics.median(s.process for s in splits),
    )


def table(label: str, found: dict[str, dict[str, Split]]) -> str:
    rows = []
    for op, sides in found.items():
        for side, s in sides.items():
            rows.append([op, side, f"{s.wall:.0f}", f"{s.caller:.0f}", f"{s.process:.0f}"])
    head = ["call", "side", "wall µs", "caller CPU µs", "process CPU µs"]
    return f"{label}\n" + render_table(head, rows, right={2, 3, 4})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per call")
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--dir", type=Path, default=None, help="directory on the disk")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> int:
    places: dict[str, dict[str, dict[str, Split]]] = {}
    handed: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="convstore-write-", dir=args.dir) as disk:
        places["disk"] = await measure(Path(disk), args.rounds, args.calls)
    shm = Path("/dev/shm")
    if os.path.isdir(shm):  # noqa: ASYNC240 (once, before any timing)
        with tempfile.TemporaryDirectory(prefix="convstore-write-", dir=shm) as memory:
            places["/dev/shm"] = await measure(Path(memory), args.rounds, args.calls)
            handed = await hand_offs(Path(memory), args.calls * 10)
    memory_only = await in_memory(args.rounds, args.calls)
    places[":memory:"] = {op: {"convstore": split} for op, split in memory_only.items()}
    if args.json:
        document = {
            "benchmark": "write_cost",
            "environment": environment({}),
            "rounds": args.rounds,
            "calls": args.calls,
            "hand_offs": handed,
            "results": {
                place: {
                    op: {side: asdict(s) for side, s in sides.items()} for op, sides in ops.items()
                }
                for place, ops in places.items()
            },
        }
        print(json.dumps(document, indent=2))
        return 0
    print(describe_environment(environment({})))
    print(f"{args.rounds} alternating rounds of {args.calls} calls; medians per call.\n")
    for place, found in places.items():
        print(table(place, found) + "\n")
    for what, micros in handed.items():
        print(f"{what} (/dev/shm): {micros:.0f} µs a call")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

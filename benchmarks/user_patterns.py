"""What applications do with sessions, side by side with the Agents SDK's, on a SQLite file
(and one case on PostgreSQL).

Each case runs convstore and the SDK in one process, the two sides alternating round by
round (the first side changes every round), and prints both sides' median, the ratio of
speeds (above 1: convstore faster) and its spread (the lowest and highest round-by-round
ratio). Both sides use WAL with ``synchronous=FULL``; items are realistic Responses-API
items. Each case says what was open and warm while it was timed:

* per request, nothing else open: a new session object, ``get_items()`` (20 items),
  ``close()``; no other object of that side is open on the file (the process has used
  the file before: the first request of a process is not timed);
* the same without ``close()`` (the Sessions guide's FastAPI example drops its objects);
* the same with ``EncryptedSession`` (ours wrapping ``SQLiteSession``, the SDK's
  ``agents.extensions.memory.EncryptedSession`` wrapping its ``SQLiteSession``);
* one writer, its object open: ``add_items([item])``, ``add_items`` of a 4-item turn,
  ``pop_item()``;
* the same writes through ``EncryptedSession`` (each side's around its ``SQLiteSession``),
  and 8 tasks adding single items to one encrypted session at once;
* 32 users at once: 32 open objects, one per user, each adding a 4-item turn, all at
  once (``asyncio.gather``), on one file; and the same on PostgreSQL with
  ``SQLAlchemySession`` on each side (ours and ``agents.extensions.memory``'s), each
  side's 32 objects sharing one engine (SQLAlchemy's default pool: 5 connections and
  10 overflow), as a web application holds one; skipped if the server does not answer;
* ``clear_session()`` of a session of 100,000 items on PostgreSQL (``SQLAlchemySession``
  on each side, the session filled again before each of at most 4 rounds, not timed);
* ``get_items(limit=20)`` on histories built as the Runner builds them: 1 item per
  ``add_items`` and 4 per call, at 100, 1,000 and 10,000 items (``--large``: 100,000);
* ``AdvancedSQLiteSession``: the first ``get_items(limit=20)`` after
  ``create_branch_from_turn`` at 1,000 items (a new branch each round).

    python benchmarks/user_patterns.py [--json] [--rounds N] [--large] [--sdk-first]
        [--backends sqlite,postgresql] [--postgres-url URL]

The PostgreSQL case drops and creates the benchmark tables (convstore_*, the SDK's) in
the database ``--postgres-url`` names (default: ``postgresql://postgres@127.0.0.1:5432/bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import itertools
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    POSTGRES_URL,
    Status,
    async_url,
    describe_environment,
    display_url,
    drop_tables_at,
    environment,
    fmt_ratio,
    fmt_seconds,
    make_items,
    probe,
    render_table,
    say,
)
from agents.extensions.memory import AdvancedSQLiteSession as SdkAdvancedSQLiteSession
from agents.extensions.memory import EncryptedSession as SdkEncryptedSession
from agents.extensions.memory import SQLAlchemySession as SdkSQLAlchemySession
from agents.memory import SQLiteSession as SdkSQLiteSession
from sqlalchemy.ext.asyncio import create_async_engine

from sessions import AdvancedSQLiteSession, EncryptedSession, SQLAlchemySession, SQLiteSession

KEY = "your-32-byte-key-here-for-aes256"
TTL = 3600
USERS = 200  # sessions in the per-request database
USER_ITEMS = 20  # items in each, added as 4-item turns
CONCURRENT = 32  # users adding at once
TURN = 4

Timed = Callable[[], Awaitable[tuple[float, int]]]  # one round: (seconds, operations)


@dataclass
class Result:
    case: str
    setting: str  # what was open and warm
    unit: str  # "ms" (latency per operation) or an "x/s" throughput
    convstore: float
    sdk: float
    ratio: float  # convstore's speed over the SDK's
    convstore_rounds: list[float] = field(default_factory=list)
    sdk_rounds: list[float] = field(default_factory=list)

    @property
    def spread(self) -> str:
        pairs = zip(self.convstore_rounds, self.sdk_rounds, strict=True)
        if self.unit == "ms":
            ratios = [sdk / ours for ours, sdk in pairs]
        else:
            ratios = [ours / sdk for ours, sdk in pairs]
        return f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else ""


class Bench:
    def __init__(self, directory: Path, rounds: int, sdk_first: bool, status: Status) -> None:
        self.directory = directory
        self.rounds = rounds
        self.sdk_first = sdk_first
        self.status = status
        self.results: list[Result] = []
        self._files = itertools.count()

    def path(self, side: str) -> Path:
        return self.directory / f"{next(self._files)}-{side}.db"

    async def compare(
        self,
        case: str,
        setting: str,
        ours: Timed,
        theirs: Timed,
        *,
        unit: str = "ms",
        rounds: int | None = None,
    ) -> Result:
        """Alternate rounds of ``ours`` and ``theirs``; record the medians."""
        times: dict[str, list[float]] = {"ours": [], "sdk": []}
        rounds = self.rounds if rounds is None else rounds
        for r in range(rounds):
            self.status.show(f"{case}: round {r + 1}/{rounds}")
            order = [("ours", ours), ("sdk", theirs)]
            if (r % 2 == 1) != self.sdk_first:
                order.reverse()
            for side, run in order:
                gc.collect()
                seconds, operations = await run()
                per = seconds / operations * 1000 if unit == "ms" else operations / seconds
                times[side].append(per)
        ours_m, sdk_m = statistics.median(times["ours"]), statistics.median(times["sdk"])
        ratio = sdk_m / ours_m if unit == "ms" else ours_m / sdk_m
        result = Result(case, setting, unit, ours_m, sdk_m, ratio, times["ours"], times["sdk"])
        self.results.append(result)
        return result


async def close(session: Any) -> None:
    done = session.close()
    if inspect.isawaitable(done):  # ours: a Closing, awaited as the application would
        await done


async def close_sdk_encrypted(session: Any) -> None:
    """The SDK's EncryptedSession passes ``close`` on to its session (sync)."""
    await close(session.underlying_session)


async def fill_and_compare(
    bench: Bench,
    sides: tuple[Any, Any],
    items: Sequence[Any],
    per_call: int,
    case: str,
    setting: str,
    timed: Callable[[Any], Timed],
) -> None:
    """Add ``items`` to each side's session, ``per_call`` a call, then compare the
    rounds ``timed`` makes of ours and of the SDK's."""
    for session in sides:
        for start in range(0, len(items), per_call):
            await session.add_items(items[start : start + per_call])
    await bench.compare(case, setting, timed(sides[0]), timed(sides[1]))


# -- per request ---------------------------------------------------------------------


async def build_users(ours_path: Path, sdk_path: Path, encrypted: bool) -> None:
    """USERS sessions of USER_ITEMS items each, every object closed afterwards."""
    items = make_items(USERS * USER_ITEMS, seed=3)
    for u in range(USERS):
        chunk = items[u * USER_ITEMS : (u + 1) * USER_ITEMS]
        ours: Any = SQLiteSession(f"user-{u}", ours_path)
        sdk: Any = SdkSQLiteSession(f"user-{u}", sdk_path)
        if encrypted:
            ours = EncryptedSession(session=ours, encryption_key=KEY, ttl=TTL)
            sdk = SdkEncryptedSession(
                session_id=f"user-{u}", underlying_session=sdk, encryption_key=KEY, ttl=TTL
            )
        for start in range(0, USER_ITEMS, TURN):
            await ours.add_items(chunk[start : start + TURN])
            await sdk.add_items(chunk[start : start + TURN])
        await close(ours)
        if encrypted:
            await close_sdk_encrypted(sdk)
        else:
            sdk.close()


def requests(make: Callable[[str], Any], finish: Callable[[Any], Awaitable[None]] | None) -> Timed:
    """A round of 100 requests, each: a new object, get_items(), and ``finish``."""
    picks = itertools.count()

    async def run() -> tuple[float, int]:
        count = 100
        started = time.perf_counter()
        for _ in range(count):
            user = (next(picks) * 37) % USERS
            session = make(f"user-{user}")
            got = await session.get_items()
            if len(got) != USER_ITEMS:
                raise RuntimeError(f"{type(session).__module__}: get_items() is wrong")
            if finish is not None:
                await finish(session)
        elapsed = time.perf_counter() - started
        if finish is None:
            gc.collect()  # the dropped objects, outside the timed part
            await asyncio.sleep(0)
        return elapsed, count

    return run


async def per_request(bench: Bench) -> None:
    ours_path, sdk_path = bench.path("ours"), bench.path("sdk")
    await build_users(ours_path, sdk_path, encrypted=False)
    await bench.compare(
        "per request: new object + get_items() + close()",
        "nothing else open on the file; the process used the file before",
        requests(lambda sid: SQLiteSession(sid, ours_path), close),
        requests(lambda sid: SdkSQLiteSession(sid, sdk_path), close),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # ours warns of an unclosed session
        await bench.compare(
            "per request: new object + get_items(), never closed",
            "objects dropped unclosed (the Sessions guide's FastAPI example)",
            requests(lambda sid: SQLiteSession(sid, ours_path), None),
            requests(lambda sid: SdkSQLiteSession(sid, sdk_path), None),
        )
        await asyncio.sleep(0)
    ours_path, sdk_path = bench.path("ours"), bench.path("sdk")
    await build_users(ours_path, sdk_path, encrypted=True)
    await bench.compare(
        "per request: EncryptedSession + get_items() + close()",
        "nothing else open on the file; the process used file and key before",
        requests(
            lambda sid: EncryptedSession(
                session=SQLiteSession(sid, ours_path), encryption_key=KEY, ttl=TTL
            ),
            close,
        ),
        requests(
            lambda sid: SdkEncryptedSession(
                session_id=sid,
                underlying_session=SdkSQLiteSession(sid, sdk_path),
                encryption_key=KEY,
                ttl=TTL,
            ),
            close_sdk_encrypted,
        ),
    )


# -- one writer ------------------------------------------------------------------------


def writer(session: Any, items: Sequence[Any], per_call: int, calls: int) -> Timed:
    cursor = itertools.count()

    async def run() -> tuple[float, int]:
        started = time.perf_counter()
        for _ in range(calls):
            n = next(cursor) * per_call
            await session.add_items([items[(n + i) % len(items)] for i in range(per_call)])
        return time.perf_counter() - started, calls * per_call

    return run


def popper(session: Any, calls: int) -> Timed:
    async def run() -> tuple[float, int]:
        started = time.perf_counter()
        for _ in range(calls):
            if await session.pop_item() is None:
                raise RuntimeError("nothing to pop")
        return time.perf_counter() - started, calls

    return run


async def adds_and_turns(
    bench: Bench, sides: tuple[Any, Any], items: Sequence[Any], prefix: str, setting: str
) -> None:
    """Compare one writer's ``add_items([item])`` (200 a round) and ``add_items`` of a
    4-item turn (100 a round) on the sides' open sessions."""
    for per_call, calls, what in ((1, 200, "[item]"), (TURN, 100, "4-item turn")):
        await bench.compare(
            f"{prefix}add_items({what})",
            setting,
            writer(sides[0], items, per_call, calls),
            writer(sides[1], items, per_call, calls),
            unit="items/s",
        )


async def one_writer(bench: Bench) -> None:
    items = make_items(2000, seed=5)
    ours = SQLiteSession("writer", bench.path("ours"))
    sdk = SdkSQLiteSession("writer", bench.path("sdk"))
    try:
        for session in (ours, sdk):  # warm: the session exists, connections open
            await session.add_items(items[:4])
        setting = "one object per side, open and warm"
        await adds_and_turns(bench, (ours, sdk), items, "", setting)
        await fill_and_compare(
            bench,
            (ours, sdk),
            items,
            TURN,
            "pop_item()",
            setting + ", 2,000+ items",
            lambda s: popper(s, 150),
        )
    finally:
        await ours.close()
        sdk.close()


def tasks_at_once(session: Any, items: Sequence[Any], tasks: int, calls: int) -> Timed:
    """A round: ``tasks`` tasks at once on one session, each adding ``calls`` single items
    one after another."""
    cursor = itertools.count()

    async def one_task() -> None:
        for _ in range(calls):
            await session.add_items([items[next(cursor) % len(items)]])

    async def run() -> tuple[float, int]:
        started = time.perf_counter()
        await asyncio.gather(*(one_task() for _ in range(tasks)))
        return time.perf_counter() - started, tasks * calls

    return run


async def encrypted_writer(bench: Bench) -> None:
    """EncryptedSession around each side's SQLiteSession: single adds, 4-item turns and
    8 tasks adding to one session at once."""
    items = make_items(2000, seed=8)
    ours = EncryptedSession(
        session=SQLiteSession("secret", bench.path("ours")), encryption_key=KEY, ttl=TTL
    )
    sdk = SdkEncryptedSession(
        session_id="secret",
        underlying_session=SdkSQLiteSession("secret", bench.path("sdk")),
        encryption_key=KEY,
        ttl=TTL,
    )
    try:
        for session in (ours, sdk):  # warm: the session and its key exist
            await session.add_items(items[:4])
        setting = "EncryptedSession per side (the SDK's around its SQLiteSession), open and warm"
        await adds_and_turns(bench, (ours, sdk), items, "EncryptedSession ", setting)
        await bench.compare(
            "EncryptedSession add_items([item]), 8 tasks on one session",
            setting,
            tasks_at_once(ours, items, 8, 25),
            tasks_at_once(sdk, items, 8, 25),
            unit="items/s",
        )
    finally:
        await close(ours)
        await close_sdk_encrypted(sdk)


def all_at_once(sessions: Sequence[Any], items: Sequence[Any]) -> Timed:
    """A round: 4 times, every session adds a 4-item turn, all at once."""

    async def run() -> tuple[float, int]:
        repeats = 4
        started = time.perf_counter()
        for r in range(repeats):
            await asyncio.gather(
                *(
                    s.add_items(list(items[((r * len(sessions) + n) * TURN) % len(items) :][:TURN]))
                    for n, s in enumerate(sessions)
                )
            )
        return time.perf_counter() - started, repeats * len(sessions)

    return run


async def users_at_once(
    bench: Bench,
    ours: Sequence[Any],
    sdk: Sequence[Any],
    items: Sequence[Any],
    case: str,
    setting: str,
) -> None:
    """Warm (every session adds a turn: each session exists, any pools are filled), then
    compare the sides' rounds of :func:`all_at_once`."""
    for session in [*ours, *sdk]:
        await session.add_items(items[:TURN])
    await bench.compare(
        case, setting, all_at_once(ours, items), all_at_once(sdk, items), unit="turns/s"
    )


async def many_users(bench: Bench) -> None:
    items = make_items(CONCURRENT * TURN * 4, seed=6)
    ours_path, sdk_path = bench.path("ours"), bench.path("sdk")
    ours = [SQLiteSession(f"u{n}", ours_path) for n in range(CONCURRENT)]
    sdk = [SdkSQLiteSession(f"u{n}", sdk_path) for n in range(CONCURRENT)]
    try:
        await users_at_once(
            bench,
            ours,
            sdk,
            items,
            f"{CONCURRENT} users at once, a 4-item turn each",
            f"{CONCURRENT} objects per side open on one file, each its own session",
        )
    finally:
        for s in ours:
            await s.close()
        for s in sdk:
            s.close()


async def many_users_postgres(bench: Bench, url: str) -> str:
    """The 32 users on PostgreSQL; return what the output says of the server."""
    reason, version = await probe(url)
    if reason is not None:
        return f"PostgreSQL case skipped: {display_url(url)} unreachable ({reason})"
    await drop_tables_at(url)
    items = make_items(CONCURRENT * TURN * 4, seed=7)
    ours_engine = create_async_engine(async_url(url))
    sdk_engine = create_async_engine(async_url(url))
    ours = [
        SQLAlchemySession(f"u{n}", engine=ours_engine, create_tables=True)
        for n in range(CONCURRENT)
    ]
    sdk = [
        SdkSQLAlchemySession(f"u{n}", engine=sdk_engine, create_tables=True)
        for n in range(CONCURRENT)
    ]
    try:
        await users_at_once(
            bench,
            ours,
            sdk,
            items,
            f"{CONCURRENT} users at once, a 4-item turn each, PostgreSQL",
            f"{CONCURRENT} SQLAlchemySession objects per side open, one engine per side "
            "(default pool), on one local database",
        )
    finally:
        for s in ours:
            await s.close()
        await ours_engine.dispose()
        await sdk_engine.dispose()
        await drop_tables_at(url)
    return f"{version} at {display_url(url)}"


def clearer(session: Any, items: Sequence[Any]) -> Timed:
    """A round: fill the session with ``items`` (1,000 a call, not timed), then time
    ``clear_session()``."""

    async def run() -> tuple[float, int]:
        for start in range(0, len(items), 1000):
            await session.add_items(list(items[start : start + 1000]))
        started = time.perf_counter()
        await session.clear_session()
        elapsed = time.perf_counter() - started
        if await session.get_items(limit=1):
            raise RuntimeError(f"{type(session).__module__}: clear_session() left items")
        return elapsed, 1

    return run


async def clear_postgres(bench: Bench, url: str, size: int) -> None:
    """``clear_session()`` of a session of ``size`` items on PostgreSQL, each side's
    ``SQLAlchemySession`` on an engine of its own."""
    await drop_tables_at(url)
    items = make_items(size, seed=10)
    ours_engine = create_async_engine(async_url(url))
    sdk_engine = create_async_engine(async_url(url))
    ours = SQLAlchemySession("clearing", engine=ours_engine, create_tables=True)
    sdk = SdkSQLAlchemySession("clearing", engine=sdk_engine, create_tables=True)
    try:
        await bench.compare(
            f"clear_session() at {size:,} items, PostgreSQL",
            "SQLAlchemySession per side, open; the session filled before each round "
            "(1,000 items a call, not timed)",
            clearer(ours, items),
            clearer(sdk, items),
            rounds=min(bench.rounds, 4),
        )
    finally:
        await ours.close()
        await ours_engine.dispose()
        await sdk_engine.dispose()
        await drop_tables_at(url)


# -- reads of histories built turn by turn -----------------------------------------------


def reader(session: Any, calls: int) -> Timed:
    async def run() -> tuple[float, int]:
        started = time.perf_counter()
        for _ in range(calls):
            await session.get_items(limit=20)
        return time.perf_counter() - started, calls

    return run


async def reads(bench: Bench, sizes: Sequence[int]) -> None:
    for per_call in (1, TURN):
        ours = SQLiteSession("reader", bench.path("ours"))
        sdk = SdkSQLiteSession("reader", bench.path("sdk"))
        built = 0
        try:
            for size in sizes:
                items = make_items(size - built, seed=size)
                bench.status.show(f"building {size:,} items, {per_call} per call")
                await fill_and_compare(
                    bench,
                    (ours, sdk),
                    items,
                    per_call,
                    f"get_items(limit=20), {size:,} items added {per_call} per call",
                    "one object per side, open and warm",
                    lambda s: reader(s, 50),
                )
                built = size
        finally:
            await ours.close()
            sdk.close()


# -- a new branch ----------------------------------------------------------------------


def first_branch_read(session: Any, turn: int) -> Timed:
    names = itertools.count()

    async def run() -> tuple[float, int]:
        await session.create_branch_from_turn(turn, f"b{next(names)}")
        started = time.perf_counter()
        got = await session.get_items(limit=20)
        elapsed = time.perf_counter() - started
        if len(got) != 20:
            raise RuntimeError(f"{type(session).__module__}: get_items(limit=20) is wrong")
        await session.switch_to_branch("main")
        return elapsed, 1

    return run


async def new_branch(bench: Bench) -> None:
    ours = AdvancedSQLiteSession(session_id="branching", db_path=bench.path("ours"))
    sdk = SdkAdvancedSQLiteSession(
        session_id="branching", db_path=str(bench.path("sdk")), create_tables=True
    )
    items = make_items(1000, seed=9)
    try:
        await fill_and_compare(
            bench,
            (ours, sdk),
            items,
            TURN,
            "first get_items(limit=20) on a new branch, 1,000 items",
            "AdvancedSQLiteSession per side, open; the branch made just before",
            lambda s: first_branch_read(s, 200),
        )
    finally:
        await ours.close()
        sdk.close()


# -- output ----------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return fmt_seconds(value / 1000)
    return f"{value:,.0f} {unit}"


def report(results: Sequence[Result]) -> str:
    rows = [
        [r.case, fmt(r.convstore, r.unit), fmt(r.sdk, r.unit), fmt_ratio(r.ratio), r.spread]
        for r in results
    ]
    table = render_table(["case", "convstore", "SDK", "ratio", "spread"], rows, right={1, 2, 3, 4})
    settings = "\n".join(f"  {r.case}: {r.setting}" for r in results)
    return (
        f"{table}\n\nratio = convstore's speed over the SDK's (above 1.00x convstore is "
        "faster); spread: lowest-highest ratio of one round against the other side's "
        f"round beside it.\nWhat was open and warm:\n{settings}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds per case")
    parser.add_argument("--large", action="store_true", help="reads at 100,000 items too")
    parser.add_argument(
        "--sdk-first", action="store_true", help="the SDK's side runs first in round 1"
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated: sqlite (every case but two), postgresql (the 32 users, "
        "clear_session)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="default: %(default)s")
    args = parser.parse_args(argv)
    args.backends = {b.strip() for b in args.backends.split(",") if b.strip()}
    if not args.backends or args.backends - {"sqlite", "postgresql"}:
        parser.error("--backends: choose from sqlite,postgresql")
    return args


async def main_async(args: argparse.Namespace) -> int:
    status = Status(enabled=sys.stdout.isatty() and not args.json)
    sizes = (100, 1_000, 10_000, 100_000) if args.large else (100, 1_000, 10_000)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convstore-patterns-") as directory:
        bench = Bench(Path(directory), max(args.rounds, 2), args.sdk_first, status)
        if "sqlite" in args.backends:
            await per_request(bench)
            await one_writer(bench)
            await encrypted_writer(bench)
            await many_users(bench)
        server = ""
        if "postgresql" in args.backends:
            server = await many_users_postgres(bench, args.postgres_url)
            if not server.startswith("PostgreSQL case skipped"):
                await clear_postgres(bench, args.postgres_url, 100_000)
        if "sqlite" in args.backends:
            await reads(bench, sizes)
            await new_branch(bench)
    status.clear()
    env = environment({"PostgreSQL case": server} if server else {})
    if args.json:
        document = {
            "benchmark": "user_patterns",
            "environment": env,
            "rounds": bench.rounds,
            "first_side": "sdk" if args.sdk_first else "convstore",
            "results": [asdict(r) | {"spread": r.spread} for r in bench.results],
        }
        print(json.dumps(document, indent=2))
        return 0
    say(status, "")
    say(status, describe_environment(env))
    say(
        status,
        ("SQLite file, WAL, synchronous=FULL on both sides; " if "sqlite" in args.backends else "")
        + f"{bench.rounds} rounds per case, "
        f"{'the SDK' if args.sdk_first else 'convstore'} first in round 1; "
        f"{time.perf_counter() - started:.0f} s in all.\n",
    )
    say(status, report(bench.results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

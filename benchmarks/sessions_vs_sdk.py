"""convstore's sessions side by side with the Agents SDK's own, in one process.

For each backend pair (SQLite file, SQLite ``:memory:``, PostgreSQL, MariaDB/MySQL):

* ``add_items([item])``: one item per call, items/s, from one task and from 8 tasks at
  once on one session; ``add_items`` of a 4-item turn (user message, tool call, its
  output, assistant message), turns/s;
* ``get_items()`` and ``get_items(limit=20)`` on a session of 100,000 items, latency;
* ``pop_item()`` on a session of 10,000 items, pops/s;
* a fresh session object and its first ``get_items()`` on a database of 1,000
  sessions, latency, while the first object of each side stays open on that database
  all along (as an application keeps one from its start-up: convstore's new
  ``SQLiteSession`` then shares that object's store; on a server each side's objects
  share one engine). It is not the cost of the first object a process opens;
* memory: the peak that ``get_items()`` of the 100,000-item session allocates
  (``tracemalloc``), as a multiple of what the returned list holds.

The two implementations run in alternate rounds (the order flips every round) and each
figure is the median of its rounds, so a burst of machine noise hits both alike. The
ratio column is always convstore's *speed* relative to the SDK's: above 1 convstore is
faster (throughput: convstore / SDK; latency: SDK time / convstore time).

    python benchmarks/sessions_vs_sdk.py [--quick] [--json] [--backends ...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from _common import (
    Status,
    async_url,
    benchmark_parser,
    describe_environment,
    display_url,
    drop_tables_at,
    environment,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    make_items,
    mean_json_size,
    parse_benchmark_args,
    probe,
    render_table,
    say,
)
from agents.extensions.memory.sqlalchemy_session import (
    SQLAlchemySession as SdkSQLAlchemySession,
)
from agents.memory import SQLiteSession as SdkSQLiteSession
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessions.sqlalchemy import SQLAlchemySession
from sessions.sqlite import SQLiteSession

BACKENDS = ("sqlite-file", "sqlite-memory", "postgres", "mysql")
TASKS = 8  # concurrent adders in the concurrent measurement
TURN = 4  # items per add_items call in the turn measurement
SESSIONS = 1000  # sessions in the database of the fresh-session measurement
SESSION_ITEMS = 8  # items in each of them
FILL_BATCH = 1000  # items per add_items call when filling a session (not timed)


class Session(Protocol):
    async def add_items(self, items: list[Any]) -> None: ...
    async def get_items(self, limit: int | None = None) -> list[Any]: ...
    async def pop_item(self) -> Any | None: ...


@dataclass(frozen=True)
class Params:
    add_calls: int  # single-item add_items calls per implementation
    history_items: int  # items in the session read by get_items
    pop_fill: int  # items in the session popped from
    pops: int  # pop_item calls per implementation
    limit_calls: int  # get_items(limit=20) calls per round
    rounds: int  # alternating rounds per measurement
    full_read_rounds: int  # rounds of one full get_items() each
    fresh_opens: int  # fresh session objects (+ get_items) per round


DEFAULT = Params(
    add_calls=2000,
    history_items=100_000,
    pop_fill=10_000,
    pops=1000,
    limit_calls=50,
    rounds=8,
    full_read_rounds=7,
    fresh_opens=200,
)
QUICK = Params(
    add_calls=400,
    history_items=10_000,
    pop_fill=1000,
    pops=200,
    limit_calls=25,
    rounds=4,
    full_read_rounds=5,
    fresh_opens=50,
)


@dataclass
class Result:
    backend: str
    measurement: str
    kind: str  # "throughput" (per second, higher is better), "latency" (seconds) or
    # "memory" (peak allocated during the call / bytes of the result; lower is better)
    unit: str
    convstore: float
    sdk: float
    ratio: float  # convstore's speed relative to the SDK's: > 1 means convstore is faster
    convstore_rounds: list[float] = field(default_factory=list)
    sdk_rounds: list[float] = field(default_factory=list)


# -- backends ------------------------------------------------------------------------


class Backend:
    """A pair of session classes on one kind of database."""

    key: str
    title: str
    ours: str
    theirs: str

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.server_version = ""

    async def prepare(self) -> str | None:
        """None if usable, else why the backend is skipped."""
        return None

    async def reset(self) -> None:
        """Start the next measurement on empty tables."""

    async def open(self, session_id: str) -> tuple[Session, Session]:
        raise NotImplementedError

    async def close(self, ours: Session, theirs: Session) -> None:
        raise NotImplementedError

    def again(self, first: Session, session_id: str) -> Session:
        """A new session object of ``first``'s class on ``first``'s database."""
        raise NotImplementedError

    async def release(self, session: Session) -> None:
        """Close a session object made by :meth:`again`, as a request handler would."""
        close = getattr(session, "close", None)
        if close is not None:
            done = close()
            if asyncio.iscoroutine(done):
                await done


class SQLiteFile(Backend):
    key = "sqlite-file"
    title = "SQLite file"
    ours = "sessions.sqlite.SQLiteSession"
    theirs = "agents.memory.SQLiteSession"

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self._count = 0
        self._files: list[Path] = []

    async def reset(self) -> None:
        # Every measurement gets new files; the closed ones of the last are deleted.
        await asyncio.to_thread(self._delete_files, self._files)
        self._files = []

    @staticmethod
    def _delete_files(paths: list[Path]) -> None:
        for path in paths:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    async def open(self, session_id: str) -> tuple[Session, Session]:
        self._count += 1
        ours_path = self.directory / f"{self._count}-convstore.db"
        sdk_path = self.directory / f"{self._count}-sdk.db"
        self._files += [ours_path, sdk_path]
        return SQLiteSession(session_id, ours_path), SdkSQLiteSession(session_id, sdk_path)

    async def close(self, ours: Session, theirs: Session) -> None:
        assert isinstance(ours, SQLiteSession)
        assert isinstance(theirs, SdkSQLiteSession)
        await ours.close()
        theirs.close()

    def again(self, first: Session, session_id: str) -> Session:
        assert isinstance(first, SQLiteSession | SdkSQLiteSession)
        return type(first)(session_id, first.db_path)


class SQLiteMemory(Backend):
    key = "sqlite-memory"
    title = "SQLite :memory:"
    ours = "sessions.sqlite.SQLiteSession"
    theirs = "agents.memory.SQLiteSession"

    async def open(self, session_id: str) -> tuple[Session, Session]:
        return SQLiteSession(session_id), SdkSQLiteSession(session_id)

    async def close(self, ours: Session, theirs: Session) -> None:
        assert isinstance(ours, SQLiteSession)
        assert isinstance(theirs, SdkSQLiteSession)
        await ours.close()
        theirs.close()


# The SDK's tables, for a server where its SQLAlchemySession cannot create them itself
# (MySQL/MariaDB: its String columns have no length). Same columns, keys and index.
_SDK_MYSQL_DDL = (
    """CREATE TABLE agent_sessions (
        session_id VARCHAR(255) NOT NULL PRIMARY KEY,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
    )""",
    """CREATE TABLE agent_messages (
        id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,
        session_id VARCHAR(255) NOT NULL,
        message_data TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
        FOREIGN KEY (session_id) REFERENCES agent_sessions (session_id) ON DELETE CASCADE,
        INDEX idx_agent_messages_session_time (session_id, created_at)
    )""",
)


class Server(Backend):
    ours = "sessions.sqlalchemy.SQLAlchemySession"
    theirs = "agents.extensions.memory.SQLAlchemySession"

    def __init__(self, key: str, title: str, url: str) -> None:
        super().__init__()
        self.key = key
        self.title = title
        self.url = url
        self.sdk_creates_tables = True
        self._engines: dict[int, tuple[AsyncEngine, AsyncEngine]] = {}

    async def prepare(self) -> str | None:
        reason, self.server_version = await probe(self.url)
        if reason is not None:
            return f"{display_url(self.url)} unreachable ({reason})"
        await self.reset()
        engine = create_async_engine(async_url(self.url))
        try:
            sdk = SdkSQLAlchemySession("probe", engine=engine, create_tables=True)
            await sdk.get_items(limit=1)
        except exc.CompileError as error:
            self.sdk_creates_tables = False
            self.notes.append(
                f"the SDK's SQLAlchemySession cannot create its tables here: {error}. "
                "The benchmark creates the same tables for it, with VARCHAR(255) keys."
            )
        finally:
            await engine.dispose()
        return None

    async def reset(self) -> None:
        await drop_tables_at(self.url)

    async def open(self, session_id: str) -> tuple[Session, Session]:
        ours_engine = create_async_engine(async_url(self.url))
        sdk_engine = create_async_engine(async_url(self.url))
        if not self.sdk_creates_tables:
            async with sdk_engine.begin() as conn:
                for statement in _SDK_MYSQL_DDL:
                    await conn.execute(text(statement))
        ours = SQLAlchemySession(session_id, engine=ours_engine, create_tables=True)
        theirs = SdkSQLAlchemySession(
            session_id, engine=sdk_engine, create_tables=self.sdk_creates_tables
        )
        self._engines[id(ours)] = (ours_engine, sdk_engine)
        return ours, theirs

    async def close(self, ours: Session, theirs: Session) -> None:
        assert isinstance(ours, SQLAlchemySession)
        await ours.close()  # the session does not dispose an engine it was given
        for engine in self._engines.pop(id(ours)):
            await engine.dispose()

    def again(self, first: Session, session_id: str) -> Session:
        # One shared engine per side, as a web app holds one.
        if isinstance(first, SQLAlchemySession):
            assert first.engine is not None
            return SQLAlchemySession(session_id, engine=first.engine)
        assert isinstance(first, SdkSQLAlchemySession)
        return SdkSQLAlchemySession(session_id, engine=first._engine)


# -- measuring -----------------------------------------------------------------------

Timed = Callable[[], Awaitable[float]]


async def alternate(
    rounds: int, ours: Timed, theirs: Timed, progress: Callable[[str], None]
) -> tuple[list[float], list[float]]:
    """Run ``ours`` and ``theirs`` in alternate rounds; return each one's durations."""
    ours_times: list[float] = []
    sdk_times: list[float] = []
    for r in range(rounds):
        progress(f"round {r + 1}/{rounds}")
        order = [(ours, ours_times), (theirs, sdk_times)]
        if r % 2:
            order.reverse()
        for run, times in order:
            gc.collect()
            times.append(await run())
    return ours_times, sdk_times


async def fill(session: Session, items: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(items), FILL_BATCH):
        await session.add_items(list(items[start : start + FILL_BATCH]))


def throughput(
    backend: Backend, name: str, unit: str, count: int, times: tuple[list[float], list[float]]
) -> Result:
    ours = [count / t for t in times[0]]
    sdk = [count / t for t in times[1]]
    ours_median, sdk_median = statistics.median(ours), statistics.median(sdk)
    return Result(
        backend=backend.key,
        measurement=name,
        kind="throughput",
        unit=f"{unit}/s",
        convstore=ours_median,
        sdk=sdk_median,
        ratio=ours_median / sdk_median,
        convstore_rounds=ours,
        sdk_rounds=sdk,
    )


def latency(
    backend: Backend, name: str, calls: int, times: tuple[list[float], list[float]]
) -> Result:
    ours = [t / calls for t in times[0]]
    sdk = [t / calls for t in times[1]]
    ours_median, sdk_median = statistics.median(ours), statistics.median(sdk)
    return Result(
        backend=backend.key,
        measurement=name,
        kind="latency",
        unit="s",
        convstore=ours_median,
        sdk=sdk_median,
        ratio=sdk_median / ours_median,
        convstore_rounds=ours,
        sdk_rounds=sdk,
    )


async def measure_add(
    backend: Backend,
    p: Params,
    items: Sequence[dict[str, Any]],
    note: Callable[[str], None],
    *,
    tasks: int = 1,
    per_call: int = 1,
) -> Result:
    """``add_items`` calls of ``per_call`` items, from ``tasks`` asyncio tasks at once on
    one session."""
    await backend.reset()
    ours, theirs = await backend.open(f"bench-add-{tasks}-{per_call}")
    try:
        for session in (ours, theirs):  # warm up: create the session, open connections
            for item in items[:5]:
                await session.add_items([item])
        per_task = max(p.add_calls // p.rounds // tasks, 1)

        def adders(session: Session) -> Timed:
            cursor = 0

            async def add_each(chunk: list[dict[str, Any]]) -> None:
                for n in range(0, len(chunk), per_call):
                    await session.add_items(chunk[n : n + per_call])

            async def run() -> float:
                nonlocal cursor
                size = per_task * per_call
                chunks = [
                    [items[(cursor + t * size + i) % len(items)] for i in range(size)]
                    for t in range(tasks)
                ]
                cursor += size * tasks
                start = time.perf_counter()
                if tasks == 1:
                    await add_each(chunks[0])
                else:
                    await asyncio.gather(*(add_each(chunk) for chunk in chunks))
                return time.perf_counter() - start

            return run

        times = await alternate(p.rounds, adders(ours), adders(theirs), note)
        if per_call > 1:
            name = f"add_items(turn of {per_call}), {per_task * p.rounds:,} calls"
            return throughput(backend, name, "turns", per_task * tasks, times)
        name = (
            f"add_items([item]), {per_task * p.rounds:,} calls"
            if tasks == 1
            else f"add_items([item]), {tasks} tasks at once"
        )
        return throughput(backend, name, "items", per_task * tasks, times)
    finally:
        await backend.close(ours, theirs)


async def measure_reads(
    backend: Backend, p: Params, items: Sequence[dict[str, Any]], note: Callable[[str], None]
) -> list[Result]:
    await backend.reset()
    ours, theirs = await backend.open("bench-read")
    try:
        for session in (ours, theirs):
            note(f"filling {len(items):,} items")
            await fill(session, items)
            got = await session.get_items()  # warm up, and check both hold every item
            if len(got) != len(items) or got[-1] != items[-1]:
                raise RuntimeError(f"{type(session).__module__}: get_items() is wrong")
            del got

        def full_read(session: Session) -> Timed:
            async def run() -> float:
                start = time.perf_counter()
                await session.get_items()
                return time.perf_counter() - start

            return run

        def limited_read(session: Session) -> Timed:
            async def run() -> float:
                start = time.perf_counter()
                for _ in range(p.limit_calls):
                    await session.get_items(limit=20)
                return time.perf_counter() - start

            return run

        full = await alternate(
            p.full_read_rounds,
            full_read(ours),
            full_read(theirs),
            lambda r: note(f"get_items() {r}"),
        )
        limited = await alternate(
            p.rounds,
            limited_read(ours),
            limited_read(theirs),
            lambda r: note(f"get_items(limit=20) {r}"),
        )
        note("memory of get_items()")
        ours_memory, sdk_memory = await read_memory(ours), await read_memory(theirs)
        return [
            latency(backend, f"get_items(), {len(items):,} items", 1, full),
            latency(backend, f"get_items(limit=20), {len(items):,} items", p.limit_calls, limited),
            Result(
                backend=backend.key,
                measurement=f"get_items() peak memory / result, {len(items):,} items",
                kind="memory",
                unit="x",
                convstore=ours_memory,
                sdk=sdk_memory,
                ratio=sdk_memory / ours_memory,
            ),
        ]
    finally:
        await backend.close(ours, theirs)


async def read_memory(session: Session) -> float:
    """Peak bytes allocated during one ``get_items()`` over the bytes its result holds
    (what is freed when the result is dropped)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = await session.get_items()
        held, peak = tracemalloc.get_traced_memory()
        del result
        gc.collect()
        returned = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (peak - before) / max(returned, 1)


async def measure_fresh(
    backend: Backend, p: Params, items: Sequence[dict[str, Any]], note: Callable[[str], None]
) -> Result:
    """A new session object on an open database of many sessions, and its first read."""
    await backend.reset()
    first_ours, first_theirs = await backend.open("bench-fresh-0")
    try:
        for session in (first_ours, first_theirs):  # the tables, before any other object
            await session.get_items()
        for n in range(SESSIONS):
            if n % 100 == 0:
                note(f"filling {n:,}/{SESSIONS:,} sessions")
            ours, theirs = (
                backend.again(first_ours, f"bench-fresh-{n}"),
                backend.again(first_theirs, f"bench-fresh-{n}"),
            )
            chunk = [items[(n * SESSION_ITEMS + i) % len(items)] for i in range(SESSION_ITEMS)]
            for session in (ours, theirs):
                await session.add_items(chunk)
                await backend.release(session)
        counter = 0

        def opener(first: Session) -> Timed:
            async def run() -> float:
                nonlocal counter
                start = time.perf_counter()
                for _ in range(p.fresh_opens):
                    counter = (counter * 7 + 13) % SESSIONS
                    session = backend.again(first, f"bench-fresh-{counter}")
                    if len(await session.get_items()) != SESSION_ITEMS:
                        raise RuntimeError(f"{type(session).__module__}: get_items() is wrong")
                    await backend.release(session)
                return time.perf_counter() - start

            return run

        times = await alternate(p.rounds, opener(first_ours), opener(first_theirs), note)
        return latency(
            backend,
            f"new session object + get_items(), {SESSIONS:,} sessions",
            p.fresh_opens,
            times,
        )
    finally:
        await backend.close(first_ours, first_theirs)


async def measure_pop(
    backend: Backend, p: Params, items: Sequence[dict[str, Any]], note: Callable[[str], None]
) -> Result:
    await backend.reset()
    ours, theirs = await backend.open("bench-pop")
    try:
        for session in (ours, theirs):
            note(f"filling {p.pop_fill:,} items")
            await fill(session, items[: p.pop_fill])
        per_round = max(p.pops // p.rounds, 1)

        def popper(session: Session) -> Timed:
            async def run() -> float:
                start = time.perf_counter()
                for _ in range(per_round):
                    if await session.pop_item() is None:
                        raise RuntimeError(f"{type(session).__module__}: nothing to pop")
                return time.perf_counter() - start

            return run

        times = await alternate(p.rounds, popper(ours), popper(theirs), note)
        return throughput(
            backend,
            f"pop_item(), {per_round * p.rounds:,} pops from {p.pop_fill:,} items",
            "pops",
            per_round,
            times,
        )
    finally:
        await backend.close(ours, theirs)


async def run_backend(
    backend: Backend, p: Params, items: Sequence[dict[str, Any]], status: Status
) -> list[Result]:
    def note_for(step: str) -> Callable[[str], None]:
        return lambda detail: status.show(f"{backend.key}: {step} {detail}")

    results = [await measure_add(backend, p, items, note_for("add_items"))]
    results.append(await measure_add(backend, p, items, note_for("turns"), per_call=TURN))
    results.append(await measure_add(backend, p, items, note_for("concurrent adds"), tasks=TASKS))
    history = items[: p.history_items]
    results += await measure_reads(backend, p, history, note_for("reads"))
    results.append(await measure_pop(backend, p, items, note_for("pop_item")))
    if backend.key != "sqlite-memory":  # a new object there is a new, empty database
        results.append(await measure_fresh(backend, p, items, note_for("fresh sessions")))
    await backend.reset()
    return results


# -- output --------------------------------------------------------------------------


def spread(r: Result) -> str:
    """The range of round-by-round ratios (round i of convstore against round i of the
    SDK, which ran right next to it)."""
    if not r.convstore_rounds or not r.sdk_rounds:
        return ""
    pairs = zip(r.convstore_rounds, r.sdk_rounds, strict=True)
    if r.kind == "throughput":
        ratios = [ours / sdk for ours, sdk in pairs]
    else:
        ratios = [sdk / ours for ours, sdk in pairs]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def report(backends: Sequence[Backend], results: Sequence[Result]) -> str:
    titles = {b.key: b.title for b in backends}
    rows: list[list[str]] = []
    previous = ""
    for r in results:
        if r.kind == "throughput":
            unit = r.unit.removesuffix("/s")
            ours, sdk = fmt_rate(r.convstore, unit), fmt_rate(r.sdk, unit)
        elif r.kind == "memory":
            ours, sdk = f"{r.convstore:.2f}x", f"{r.sdk:.2f}x"
        else:
            ours, sdk = fmt_seconds(r.convstore), fmt_seconds(r.sdk)
        label = titles[r.backend] if r.backend != previous else ""
        previous = r.backend
        rows.append([label, r.measurement, ours, sdk, fmt_ratio(r.ratio), spread(r)])
    table = render_table(
        ["backend", "measurement", "convstore", "SDK", "speed ratio", "ratio spread"],
        rows,
        right={2, 3, 4, 5},
    )
    legend = (
        "speed ratio = convstore's speed relative to the SDK's; above 1.00x convstore is\n"
        "faster. Throughput rows (/s, higher is better): convstore / SDK. Latency rows\n"
        "(ms per call, lower is better): SDK time / convstore time. Memory rows: peak\n"
        "bytes allocated during the call / bytes the result holds (lower is better).\n"
        "Each figure is the median of alternating rounds; spread: min-max of the rounds\n"
        "(--json has every round)."
    )
    return f"{table}\n\n{legend}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__.split("\n\n")[0], BACKENDS)
    return parse_benchmark_args(parser, BACKENDS, argv)


async def main_async(args: argparse.Namespace) -> int:
    p = QUICK if args.quick else DEFAULT
    status = Status(enabled=sys.stdout.isatty() and not args.json)
    quiet = bool(args.json)
    items = make_items(max(p.history_items, p.pop_fill, p.add_calls))
    results: list[Result] = []
    skipped: dict[str, str] = {}
    used: list[Backend] = []
    with tempfile.TemporaryDirectory(prefix="convstore-bench-") as directory:
        candidates: dict[str, Backend] = {
            "sqlite-file": SQLiteFile(Path(directory)),
            "sqlite-memory": SQLiteMemory(),
            "postgres": Server("postgres", "PostgreSQL", args.postgres_url),
            "mysql": Server("mysql", "MariaDB/MySQL", args.mysql_url),
        }
        for key in args.backends:
            backend = candidates[key]
            status.show(f"{key}: connecting")
            reason = await backend.prepare()
            if reason is not None:
                skipped[key] = reason
                if quiet:  # the table run lists it under the table
                    say(status, f"{key}: skipped, {reason}", quiet=True)
                continue
            used.append(backend)
            results += await run_backend(backend, p, items, status)
            status.clear()
    servers = {b.title: b.server_version for b in used if b.server_version}
    env = environment(servers)
    if args.json:
        document = {
            "benchmark": "sessions_vs_sdk",
            "environment": env,
            "parameters": asdict(p) | {"mean_item_bytes": round(mean_json_size(items), 1)},
            "ratio": "convstore speed / SDK speed (> 1: convstore faster)",
            "backends": {
                b.key: {"title": b.title, "convstore": b.ours, "sdk": b.theirs, "notes": b.notes}
                for b in used
            },
            "skipped": skipped,
            "results": [asdict(r) for r in results],
        }
        print(json.dumps(document, indent=2))
        return 0
    print()
    print(describe_environment(env))
    print(
        f"Items: realistic Responses-API items, {mean_json_size(items):.0f} bytes of JSON "
        "on average. Sessions compared:"
    )
    for b in used:
        print(f"  {b.title:<16} {b.ours}  vs  {b.theirs}")
        for n in b.notes:
            print(f"    note: {n}")
    print()
    print(report(used, results))
    for key, reason in skipped.items():
        print(f"skipped {key}: {reason}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

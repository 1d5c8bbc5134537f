"""What encryption costs: convstore's EncryptedSession, the same session unencrypted, and
the Agents SDK's EncryptedSession, side by side in one process.

For each backend (SQLite file, SQLite ``:memory:``; PostgreSQL with ``--backends``):

* ``add_items([item])``: one item per call, items/s;
* ``get_items(limit=20)`` and ``get_items()`` on a session of 10,000 items, latency.

convstore's EncryptedSession wraps ``SQLiteSession`` / ``SQLAlchemySession``; the SDK's
``agents.extensions.memory.EncryptedSession`` wraps the SDK's ``SQLiteSession`` /
``SQLAlchemySession``. All three use the key ``"your-32-byte-key-here-for-aes256"`` and
``ttl=3600``. The three run in rotating order, round by round, and each figure is the
median of its rounds. Ratios are speeds: *vs plain* is encrypted / unencrypted (the
overhead of encryption: below 1 it costs), *vs SDK* is convstore's EncryptedSession
against the SDK's (above 1 convstore is faster).

    python benchmarks/encryption.py [--quick] [--json] [--backends ...]
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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
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
    parse_benchmark_args,
    probe,
    render_table,
    say,
)
from agents.extensions.memory import EncryptedSession as SdkEncryptedSession
from agents.extensions.memory.sqlalchemy_session import (
    SQLAlchemySession as SdkSQLAlchemySession,
)
from agents.memory import SQLiteSession as SdkSQLiteSession
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sessions import EncryptedSession, SQLAlchemySession, SQLiteSession

BACKENDS = ("sqlite-file", "sqlite-memory", "postgres")
DEFAULT_BACKENDS = "sqlite-file,sqlite-memory"
KEY = "your-32-byte-key-here-for-aes256"
TTL = 3600
SIDES = ("encrypted", "plain", "sdk")
FILL_BATCH = 1000


class Session(Protocol):
    async def add_items(self, items: list[Any]) -> None: ...
    async def get_items(self, limit: int | None = None) -> list[Any]: ...


@dataclass(frozen=True)
class Params:
    add_calls: int  # single-item add_items calls per side
    history_items: int  # items in the session read by get_items
    limit_calls: int  # get_items(limit=20) calls per round
    rounds: int
    full_read_rounds: int


DEFAULT = Params(
    add_calls=1000, history_items=10_000, limit_calls=100, rounds=7, full_read_rounds=7
)
QUICK = Params(add_calls=300, history_items=10_000, limit_calls=40, rounds=5, full_read_rounds=5)


@dataclass
class Result:
    backend: str
    measurement: str
    kind: str  # "throughput" (per second) or "latency" (seconds per call)
    medians: dict[str, float]
    rounds: dict[str, list[float]]

    def speed(self, side: str) -> float:
        value = self.medians[side]
        return value if self.kind == "throughput" else 1 / value

    @property
    def vs_plain(self) -> float:
        return self.speed("encrypted") / self.speed("plain")

    @property
    def vs_sdk(self) -> float:
        return self.speed("encrypted") / self.speed("sdk")


# -- backends --------------------------------------------------------------------------


class Backend:
    key = ""
    title = ""
    server_version = ""

    async def prepare(self) -> str | None:
        return None

    async def reset(self) -> None:
        return None

    async def open(self, session_id: str) -> dict[str, Session]:
        raise NotImplementedError

    async def close(self, sessions: dict[str, Session]) -> None:
        for side in ("encrypted", "plain"):
            await sessions[side].close()  # type: ignore[attr-defined]
        sdk = sessions["sdk"]
        assert isinstance(sdk, SdkEncryptedSession)
        underlying = sdk.underlying_session
        if isinstance(underlying, SdkSQLiteSession):
            underlying.close()


class SQLiteFile(Backend):
    key, title = "sqlite-file", "SQLite file"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.opened = 0

    async def open(self, session_id: str) -> dict[str, Session]:
        self.opened += 1
        path = self.directory / f"run{self.opened}"
        return {
            "encrypted": EncryptedSession(
                session=SQLiteSession(session_id, f"{path}-enc.db"), encryption_key=KEY, ttl=TTL
            ),
            "plain": SQLiteSession(session_id, f"{path}-plain.db"),
            "sdk": SdkEncryptedSession(
                session_id=session_id,
                underlying_session=SdkSQLiteSession(session_id, f"{path}-sdk.db"),
                encryption_key=KEY,
                ttl=TTL,
            ),
        }


class SQLiteMemory(Backend):
    key, title = "sqlite-memory", "SQLite :memory:"

    async def open(self, session_id: str) -> dict[str, Session]:
        return {
            "encrypted": EncryptedSession(
                session=SQLiteSession(session_id), encryption_key=KEY, ttl=TTL
            ),
            "plain": SQLiteSession(session_id),
            "sdk": SdkEncryptedSession(
                session_id=session_id,
                underlying_session=SdkSQLiteSession(session_id),
                encryption_key=KEY,
                ttl=TTL,
            ),
        }


class Postgres(Backend):
    key, title = "postgres", "PostgreSQL"

    def __init__(self, url: str) -> None:
        self.url = url
        self._engines: list[AsyncEngine] = []

    async def prepare(self) -> str | None:
        reason, self.server_version = await probe(self.url)
        if reason is not None:
            return f"{display_url(self.url)} unreachable ({reason})"
        await self.reset()
        return None

    async def reset(self) -> None:
        await drop_tables_at(self.url)

    async def open(self, session_id: str) -> dict[str, Session]:
        ours, sdk = (
            create_async_engine(async_url(self.url)),
            create_async_engine(async_url(self.url)),
        )
        self._engines += [ours, sdk]
        return {
            "encrypted": EncryptedSession(
                session=SQLAlchemySession(f"{session_id}-enc", engine=ours, create_tables=True),
                encryption_key=KEY,
                ttl=TTL,
            ),
            "plain": SQLAlchemySession(f"{session_id}-plain", engine=ours, create_tables=True),
            "sdk": SdkEncryptedSession(
                session_id=session_id,
                underlying_session=SdkSQLAlchemySession(session_id, engine=sdk, create_tables=True),
                encryption_key=KEY,
                ttl=TTL,
            ),
        }

    async def close(self, sessions: dict[str, Session]) -> None:
        await super().close(sessions)
        for engine in self._engines:
            await engine.dispose()
        self._engines.clear()


# -- measuring -------------------------------------------------------------------------

Timed = Callable[[], Awaitable[float]]


async def rotate(
    rounds: int, runs: dict[str, Timed], progress: Callable[[str], None]
) -> dict[str, list[float]]:
    """Run every side once per round, the starting side moving each round."""
    times: dict[str, list[float]] = {side: [] for side in runs}
    order = list(runs)
    for r in range(rounds):
        progress(f"round {r + 1}/{rounds}")
        for side in order[r % len(order) :] + order[: r % len(order)]:
            gc.collect()
            times[side].append(await runs[side]())
    return times


def result(backend: Backend, name: str, kind: str, rounds: dict[str, list[float]]) -> Result:
    return Result(
        backend.key,
        name,
        kind,
        {side: statistics.median(values) for side, values in rounds.items()},
        rounds,
    )


async def measure_add(
    backend: Backend, p: Params, items: Sequence[dict[str, Any]], note: Callable[[str], None]
) -> Result:
    await backend.reset()
    sessions = await backend.open("bench-add")
    try:
        for session in sessions.values():  # warm up: keys, tables, connections
            for item in items[:5]:
                await session.add_items([item])
        per_round = max(p.add_calls // p.rounds, 1)

        def adder(session: Session) -> Timed:
            cursor = 0

            async def run() -> float:
                nonlocal cursor
                chunk = [items[(cursor + i) % len(items)] for i in range(per_round)]
                cursor += per_round
                start = time.perf_counter()
                for item in chunk:
                    await session.add_items([item])
                return per_round / (time.perf_counter() - start)

            return run

        rounds = await rotate(p.rounds, {k: adder(s) for k, s in sessions.items()}, note)
        name = f"add_items([item]), {per_round * p.rounds:,} calls"
        return result(backend, name, "throughput", rounds)
    finally:
        await backend.close(sessions)


async def measure_reads(
    backend: Backend, p: Params, items: Sequence[dict[str, Any]], note: Callable[[str], None]
) -> list[Result]:
    await backend.reset()
    sessions = await backend.open("bench-read")
    try:
        for side, session in sessions.items():
            note(f"filling {side}")
            for start in range(0, len(items), FILL_BATCH):
                await session.add_items(list(items[start : start + FILL_BATCH]))
            got = await session.get_items()
            if len(got) != len(items) or got[-1] != items[-1]:
                raise RuntimeError(f"{side}: get_items() is wrong")

        def limited(session: Session) -> Timed:
            async def run() -> float:
                start = time.perf_counter()
                for _ in range(p.limit_calls):
                    await session.get_items(limit=20)
                return (time.perf_counter() - start) / p.limit_calls

            return run

        def full(session: Session) -> Timed:
            async def run() -> float:
                start = time.perf_counter()
                await session.get_items()
                return time.perf_counter() - start

            return run

        limit_rounds = await rotate(
            p.rounds, {k: limited(s) for k, s in sessions.items()}, lambda r: note(f"limit {r}")
        )
        full_rounds = await rotate(
            p.full_read_rounds, {k: full(s) for k, s in sessions.items()}, lambda r: note(r)
        )
        n = f"{len(items):,}"
        return [
            result(backend, f"get_items(limit=20), {n} items", "latency", limit_rounds),
            result(backend, f"get_items(), {n} items", "latency", full_rounds),
        ]
    finally:
        await backend.close(sessions)


# -- output ----------------------------------------------------------------------------


def report(backends: Sequence[Backend], results: Sequence[Result]) -> str:
    titles = {b.key: b.title for b in backends}
    rows: list[list[str]] = []
    previous = ""
    for r in results:
        if r.kind == "throughput":
            cells = [fmt_rate(r.medians[s], "items") for s in SIDES]
        else:
            cells = [fmt_seconds(r.medians[s]) for s in SIDES]
        label = titles[r.backend] if r.backend != previous else ""
        previous = r.backend
        rows.append([label, r.measurement, *cells, fmt_ratio(r.vs_plain), fmt_ratio(r.vs_sdk)])
    headers = ["backend", "measurement", "encrypted", "plain", "SDK encrypted"]
    table = render_table([*headers, "vs plain", "vs SDK"], rows, right={2, 3, 4, 5, 6})
    legend = (
        "Ratios are speeds. vs plain: convstore's EncryptedSession / the same session\n"
        "unencrypted (below 1.00x is the cost of encryption). vs SDK: convstore's\n"
        "EncryptedSession / the SDK's EncryptedSession (above 1.00x convstore is faster).\n"
        "Each figure is the median of rounds run in rotating order."
    )
    return f"{table}\n\n{legend}"


async def main_async(args: argparse.Namespace) -> int:
    p = QUICK if args.quick else DEFAULT
    status = Status(enabled=sys.stdout.isatty() and not args.json)
    items = make_items(max(p.history_items, p.add_calls))
    results: list[Result] = []
    used: list[Backend] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="convstore-bench-") as directory:
        candidates: dict[str, Backend] = {
            "sqlite-file": SQLiteFile(Path(directory)),
            "sqlite-memory": SQLiteMemory(),
            "postgres": Postgres(args.postgres_url),
        }
        for key in args.backends:
            backend = candidates[key]
            reason = await backend.prepare()
            if reason is not None:
                skipped[key] = reason
                say(status, f"{key}: skipped, {reason}", quiet=bool(args.json))
                continue
            used.append(backend)

            def note(step: str, key: str = key) -> Callable[[str], None]:
                return lambda detail: status.show(f"{key}: {step} {detail}")

            results.append(await measure_add(backend, p, items, note("add_items")))
            results += await measure_reads(backend, p, items[: p.history_items], note("reads"))
            await backend.reset()
            status.clear()
    env = environment({b.title: b.server_version for b in used if b.server_version})
    if args.json:
        document = {
            "benchmark": "encryption",
            "environment": env,
            "parameters": asdict(p),
            "results": [asdict(r) | {"vs_plain": r.vs_plain, "vs_sdk": r.vs_sdk} for r in results],
            "skipped": skipped,
        }
        print(json.dumps(document, indent=2))
        return 0
    say(status, describe_environment(env))
    say(status, "")
    say(status, report(used, results))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__.split("\n\n")[0], BACKENDS)
    parser.set_defaults(backends=DEFAULT_BACKENDS)
    return parse_benchmark_args(parser, BACKENDS, argv)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

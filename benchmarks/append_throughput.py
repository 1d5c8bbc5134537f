"""Append throughput of convstore's event store: events/s, one event per append.

1. One writer appending in sequence (SQLite file, PostgreSQL, MariaDB/MySQL).
2. Four writer processes (multiprocessing, spawn) appending to four distinct streams,
   then to one shared stream with ``expected_version="any"``.
3. PostgreSQL only: what commit-ordered positions cost. Plain asyncpg loops give the
   reference: an INSERT into a table whose position is a BIGSERIAL (numbers handed
   out at insert time, writers in parallel, but not commit-ordered); the same INSERT
   preceded by an ``UPDATE ... RETURNING`` of one counter row whose lock lasts until
   commit (the store's technique up to schema revision 2, and still MariaDB's); and
   the store's technique since revision 3: the position derived from the transaction
   id, after a ``FOR SHARE`` read of one row (eventstore/backends/postgres.py). The
   store's figure is reported as a ratio to the BIGSERIAL loop.

Every run lasts a fixed time, on tables dropped and recreated before it; the writers
start together (a barrier, after connecting and a warm-up) and its rate is all events
appended / (last writer's end - first writer's start). Each figure is the median of
several runs, the variants of a backend interleaved round by round so that machine
noise hits them alike.

    python benchmarks/append_throughput.py [--quick] [--json] [--backends ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Protocol

from _common import (
    Status,
    benchmark_parser,
    describe_environment,
    display_url,
    drop_tables_at,
    environment,
    fmt_rate,
    fmt_ratio,
    make_items,
    parse_benchmark_args,
    plain_url,
    probe,
    render_table,
    say,
)

from eventstore import EventStore, ItemsAdded, encode_event, encode_items

BACKENDS = ("sqlite-file", "postgres", "mysql")
TITLES = {"sqlite-file": "SQLite file", "postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}
WRITERS = 4
WARM_UP_APPENDS = 5
SAMPLE_EVENTS = 64  # distinct payloads the writers cycle through

SEQ_TABLE = "bench_seq_baseline"
HEAD_EVENTS_TABLE = "bench_head_baseline"
HEAD_COUNTER_TABLE = "bench_head_counter"
XID_EVENTS_TABLE = "bench_xid_baseline"
_BASELINE_DDL = (
    f"""CREATE TABLE {SEQ_TABLE} (
        position BIGSERIAL PRIMARY KEY,
        stream_id VARCHAR(255) NOT NULL,
        payload BYTEA NOT NULL,
        recorded_at BIGINT NOT NULL
    )""",
    f"""CREATE TABLE {HEAD_EVENTS_TABLE} (
        position BIGINT PRIMARY KEY,
        stream_id VARCHAR(255) NOT NULL,
        payload BYTEA NOT NULL,
        recorded_at BIGINT NOT NULL
    )""",
    f"""CREATE TABLE {XID_EVENTS_TABLE} (
        position BIGINT PRIMARY KEY,
        stream_id VARCHAR(255) NOT NULL,
        payload BYTEA NOT NULL,
        recorded_at BIGINT NOT NULL
    )""",
    f"CREATE TABLE {HEAD_COUNTER_TABLE} (name VARCHAR(32) PRIMARY KEY, position BIGINT NOT NULL)",
    f"INSERT INTO {HEAD_COUNTER_TABLE} VALUES ('log', 0)",
)
_SEQ_INSERT = f"INSERT INTO {SEQ_TABLE} (stream_id, payload, recorded_at) VALUES ($1, $2, $3)"
_HEAD_ADVANCE = (
    f"UPDATE {HEAD_COUNTER_TABLE} SET position = position + 1 WHERE name = 'log' RETURNING position"
)
_HEAD_INSERT = (
    f"INSERT INTO {HEAD_EVENTS_TABLE} (position, stream_id, payload, recorded_at) "
    "VALUES ($1, $2, $3, $4)"
)

_XID_POSITION = (
    f"SELECT (pg_current_xact_id()::text::bigint << 20) + 1 FROM {HEAD_COUNTER_TABLE} "
    "WHERE name = 'log' FOR SHARE"
)
_XID_INSERT = (
    f"INSERT INTO {XID_EVENTS_TABLE} (position, stream_id, payload, recorded_at) "
    "VALUES ($1, $2, $3, $4)"
)


def sample_events() -> list[ItemsAdded]:
    """One ItemsAdded per append, each holding one realistic item."""
    return [ItemsAdded(items=encode_items([item])) for item in make_items(SAMPLE_EVENTS)]


# -- writers (run in the worker processes) -------------------------------------------


class Writer(Protocol):
    async def append(self, n: int) -> None: ...
    async def close(self) -> None: ...


class StoreWriter:
    """``EventStore.append`` of one event (a store without projections: the bare log)."""

    def __init__(self, target: str, stream_id: str) -> None:
        self.store = EventStore(target, create_tables=True)
        self.stream_id = stream_id
        self.events = sample_events()

    async def append(self, n: int) -> None:
        event = self.events[n % len(self.events)]
        await self.store.append(self.stream_id, [event], expected_version="any")

    async def close(self) -> None:
        await self.store.close()


class PlainWriter:
    """The same payload in a plain table, one transaction per event (raw asyncpg)."""

    def __init__(self, url: str, stream_id: str, *, technique: str) -> None:
        self.url = plain_url(url)
        self.stream_id = stream_id
        self.technique = technique  # "seq", "head" or "xid"
        self.payloads = [encode_event(event) for event in sample_events()]
        self.conn: Any = None

    async def append(self, n: int) -> None:
        if self.conn is None:
            import asyncpg

            self.conn = await asyncpg.connect(self.url)
        payload = self.payloads[n % len(self.payloads)]
        now = time.time_ns() // 1000
        async with self.conn.transaction():
            if self.technique == "head":
                position = await self.conn.fetchval(_HEAD_ADVANCE)
                await self.conn.execute(_HEAD_INSERT, position, self.stream_id, payload, now)
            elif self.technique == "xid":
                position = await self.conn.fetchval(_XID_POSITION)
                await self.conn.execute(_XID_INSERT, position, self.stream_id, payload, now)
            else:
                await self.conn.execute(_SEQ_INSERT, self.stream_id, payload, now)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


@dataclass(frozen=True)
class Job:
    kind: str  # "store", "plain-seq", "plain-head" or "plain-xid"
    target: str  # SQLite path or database URL
    stream_id: str
    seconds: float
    index: int


@dataclass(frozen=True)
class Outcome:
    index: int
    events: int
    started: float  # time.monotonic(): one system-wide clock on Linux, macOS, Windows
    ended: float
    error: str = ""


def make_writer(job: Job) -> Writer:
    if job.kind == "store":
        return StoreWriter(job.target, job.stream_id)
    return PlainWriter(job.target, job.stream_id, technique=job.kind.removeprefix("plain-"))


async def timed_appends(writer: Writer, seconds: float) -> tuple[int, float, float]:
    count = 0
    started = time.monotonic()
    deadline = started + seconds
    while True:
        await writer.append(count)
        count += 1
        now = time.monotonic()
        if now >= deadline:
            return count, started, now


async def warm_up(writer: Writer) -> None:
    for n in range(WARM_UP_APPENDS):
        await writer.append(n)


def worker(job: Job, barrier: Barrier, outcomes: Queue[Outcome]) -> None:
    """One writer process: connect, warm up, wait for the others, append until time's up."""
    try:
        with asyncio.Runner() as runner:
            writer = make_writer(job)
            try:
                runner.run(warm_up(writer))
                barrier.wait(timeout=300)
                count, started, ended = runner.run(timed_appends(writer, job.seconds))
            finally:
                runner.run(writer.close())
        outcomes.put(Outcome(job.index, count, started, ended))
    except BaseException as error:
        barrier.abort()  # release the others instead of leaving them at the barrier
        outcomes.put(Outcome(job.index, 0, 0.0, 0.0, f"{type(error).__name__}: {error}"))


# -- the parent ----------------------------------------------------------------------


SINGLE = "1 writer"
DISTINCT = f"{WRITERS} processes, {WRITERS} streams"
SHARED = f"{WRITERS} processes, 1 stream"


@dataclass(frozen=True)
class Variant:
    scenario: str  # SINGLE, DISTINCT, SHARED, or the kind of a plain loop
    kind: str  # "store", "plain-seq", "plain-head" or "plain-xid"
    writers: int
    shared: bool = False

    @property
    def label(self) -> str:
        if self.kind == "store":
            return self.scenario
        return f"{self.kind}, {self.writers} writer{'s' if self.writers > 1 else ''}"


def variants_for(key: str) -> list[Variant]:
    variants = [
        Variant(SINGLE, "store", 1),
        Variant(DISTINCT, "store", WRITERS),
        Variant(SHARED, "store", WRITERS, shared=True),
    ]
    if key == "postgres":
        variants += [
            Variant(kind, kind, writers)
            for kind in ("plain-seq", "plain-head", "plain-xid")
            for writers in (1, WRITERS)
        ]
    return variants


@dataclass
class Measurement:
    backend: str
    scenario: str
    kind: str
    writers: int
    streams: int
    events_per_second: float  # median of the rounds
    rounds: list[float] = field(default_factory=list)  # events/s of each round
    events: list[int] = field(default_factory=list)  # events appended in each round
    per_writer: list[list[int]] = field(default_factory=list)  # each round, each writer


def run_writers(
    kind: str, target: str, stream_ids: Sequence[str], seconds: float
) -> tuple[int, float, list[int]]:
    """Run one writer process per entry of ``stream_ids``; return (events, span, per writer)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(stream_ids))
    outcomes: Queue[Outcome] = context.Queue()
    processes = [
        context.Process(
            target=worker,
            args=(Job(kind, target, stream_id, seconds, i), barrier, outcomes),
            daemon=True,
        )
        for i, stream_id in enumerate(stream_ids)
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
    results.sort(key=lambda r: r.index)
    span = max(r.ended for r in results) - min(r.started for r in results)
    return sum(r.events for r in results), span, [r.events for r in results]


async def prepare_store(target: str, stream_ids: Sequence[str]) -> None:
    """Create the tables and the streams, so the timed appends find them."""
    async with EventStore(target, create_tables=True) as store:
        for stream_id in stream_ids:
            await store.append(stream_id, [sample_events()[0]], expected_version="any")


async def prepare_baseline(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain_url(url))
    try:
        for statement in _BASELINE_DDL:
            await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class Backend:
    key: str
    target: str  # URL, or a directory for SQLite files
    server_version: str = ""
    _files: int = 0

    def fresh_target(self) -> str:
        """Where the next measurement writes, on empty tables."""
        if self.key == "sqlite-file":
            self._files += 1
            return str(Path(self.target) / f"log-{self._files}.db")
        asyncio.run(drop_tables_at(self.target))
        return self.target


def run_once(backend: Backend, variant: Variant, seconds: float) -> tuple[int, float, list[int]]:
    """One timed run of ``variant`` on fresh tables: (events, span, events per writer)."""
    target = backend.fresh_target()
    if variant.shared:
        stream_ids = ["shared"] * variant.writers
    else:
        stream_ids = [f"writer-{i}" for i in range(variant.writers)]
    if variant.kind == "store":
        asyncio.run(prepare_store(target, sorted(set(stream_ids))))
    else:
        asyncio.run(prepare_baseline(target))
    return run_writers(variant.kind, target, stream_ids, seconds)


def measure_backend(
    backend: Backend, rounds: int, seconds: float, show: Callable[[str], None]
) -> list[Measurement]:
    """Every variant, in rounds; each round runs them all, starting one further along."""
    variants = variants_for(backend.key)
    found = {
        v: Measurement(
            backend=backend.key,
            scenario=v.scenario,
            kind=v.kind,
            writers=v.writers,
            streams=1 if v.shared else v.writers,
            events_per_second=0.0,
        )
        for v in variants
    }
    for r in range(rounds):
        shift = r % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            show(f"{backend.key}: {variant.label}, round {r + 1}/{rounds}")
            events, span, per_writer = run_once(backend, variant, seconds)
            m = found[variant]
            m.rounds.append(events / span)
            m.events.append(events)
            m.per_writer.append(per_writer)
    for m in found.values():
        m.events_per_second = statistics.median(m.rounds)
    if backend.key != "sqlite-file":
        asyncio.run(drop_tables_at(backend.target))
    return list(found.values())


# -- output --------------------------------------------------------------------------


def report_store(results: Sequence[Measurement]) -> str:
    by = {(m.backend, m.scenario): m for m in results}
    rows = []
    for key in BACKENDS:
        if (key, SINGLE) not in by:
            continue
        single = by[(key, SINGLE)].events_per_second
        distinct = by[(key, DISTINCT)].events_per_second
        shared = by[(key, SHARED)].events_per_second
        rows.append(
            [
                TITLES[key],
                fmt_rate(single, "ev"),
                fmt_rate(distinct, "ev"),
                fmt_ratio(distinct / single),
                fmt_rate(shared, "ev"),
                fmt_ratio(shared / single),
            ]
        )
    headers = ["backend", SINGLE, DISTINCT, "÷ 1 writer", SHARED, "÷ 1 writer"]
    return render_table(headers, rows, right={1, 2, 3, 4, 5})


def report_baseline(results: Sequence[Measurement]) -> str:
    by = {(m.scenario, m.writers): m.events_per_second for m in results if m.backend == "postgres"}
    store = {1: by[(SINGLE, 1)], WRITERS: by[(DISTINCT, WRITERS)]}
    seq = {n: by[("plain-seq", n)] for n in (1, WRITERS)}
    head = {n: by[("plain-head", n)] for n in (1, WRITERS)}
    xid = {n: by[("plain-xid", n)] for n in (1, WRITERS)}
    rows = []
    for label, rates in (
        ("plain INSERT, BIGSERIAL position (baseline)", seq),
        ("plain INSERT + UPDATE head row RETURNING", head),
        ("plain INSERT, position from xid, FOR SHARE", xid),
        ("convstore EventStore.append", store),
    ):
        rows.append(
            [
                label,
                fmt_rate(rates[1], "ev"),
                fmt_rate(rates[WRITERS], "ev"),
                fmt_ratio(rates[WRITERS] / rates[1]),
                fmt_ratio(rates[1] / seq[1]),
                fmt_ratio(rates[WRITERS] / seq[WRITERS]),
            ]
        )
    headers = [
        "PostgreSQL, one transaction per event",
        "1 writer",
        f"{WRITERS} writers",
        f"{WRITERS}w ÷ 1w",
        "÷ BIGSERIAL 1w",
        f"÷ BIGSERIAL {WRITERS}w",
    ]
    table = render_table(headers, rows, right={1, 2, 3, 4, 5})
    explanation = (
        "A BIGSERIAL hands numbers out at insert time and lets writers commit in\n"
        "parallel (sharing WAL flushes), but numbers can commit out of order: a reader\n"
        "tailing by position could skip one. UPDATE ... RETURNING of one head row, whose\n"
        "lock lasts until commit, makes positions gapless and commit-ordered, but every\n"
        "append then waits for the one before to commit (schema revision 2). Since\n"
        "revision 3 the store derives positions from the transaction id (xid << 20 plus\n"
        "the event's offset) after a FOR SHARE read of the head row (shared locks do not\n"
        "wait for each other), and readers stop below the oldest transaction in\n"
        "progress: writers run in parallel, and a tailing reader still never skips an\n"
        "event. The store's append is also more work than one INSERT: the stream row\n"
        "(SELECT ... FOR UPDATE, then INSERT or UPDATE) and the event row with its hash\n"
        "chain, through SQLAlchemy. The ÷ BIGSERIAL columns divide a row's events/s by\n"
        "the plain BIGSERIAL loop's with the same number of writers."
    )
    return f"{table}\n\n{explanation}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__.split("\n\n")[0], BACKENDS)
    parser.add_argument(
        "--seconds", type=float, help="length of each timed run (default 2, --quick 1.5)"
    )
    parser.add_argument(
        "--rounds", type=int, help="timed runs per measurement, median (default 3, --quick 1)"
    )
    args = parse_benchmark_args(parser, BACKENDS, argv)
    if args.seconds is None:
        args.seconds = 1.5 if args.quick else 2.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    return args


class Ticker:
    """Keeps the status line's elapsed time moving while a measurement runs."""

    def __init__(self, status: Status) -> None:
        self.status = status
        self._label = ""
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set(self, label: str) -> None:
        self._label = label
        self._since = time.monotonic()
        self.status.show(label)
        if self.status.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if self._label:
                self.status.show(f"{self._label} ({time.monotonic() - self._since:.0f} s)")

    def stop(self) -> None:
        self._label = ""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.status.clear()


def run(args: argparse.Namespace) -> int:
    status = Status(enabled=sys.stdout.isatty() and not args.json)
    ticker = Ticker(status)
    results: list[Measurement] = []
    skipped: dict[str, str] = {}
    servers: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="convstore-bench-") as directory:
        targets = {
            "sqlite-file": directory,
            "postgres": args.postgres_url,
            "mysql": args.mysql_url,
        }
        try:
            for key in args.backends:
                backend = Backend(key, targets[key])
                if key != "sqlite-file":
                    ticker.set(f"{key}: connecting")
                    reason, backend.server_version = asyncio.run(probe(backend.target))
                    if reason is not None:
                        skipped[key] = f"{display_url(backend.target)} unreachable ({reason})"
                        ticker.set("")
                        if args.json:  # the table run lists it under the tables
                            say(status, f"{key}: skipped, {skipped[key]}", quiet=True)
                        continue
                    servers[TITLES[key]] = backend.server_version
                results += measure_backend(backend, args.rounds, args.seconds, ticker.set)
        finally:
            ticker.stop()
    env = environment(servers)
    if args.json:
        document = {
            "benchmark": "append_throughput",
            "environment": env,
            "parameters": {"seconds": args.seconds, "rounds": args.rounds, "writers": WRITERS},
            "skipped": skipped,
            "results": [asdict(m) for m in results],
        }
        print(json.dumps(document, indent=2))
        return 0
    print()
    print(describe_environment(env))
    print(
        "One event (ItemsAdded of one ~200-byte item) per append; EventStore without\n"
        "projections (the bare log). Writers are separate processes; the shared stream is\n"
        f'appended with expected_version="any". Each figure: median of {args.rounds} '
        f"run(s) of {args.seconds:g} s,\nthe variants of a backend interleaved, on fresh tables."
    )
    print()
    print(report_store(results))
    if any(m.backend == "postgres" for m in results):
        print()
        print(report_baseline(results))
    for key, reason in skipped.items():
        print(f"skipped {key}: {reason}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""History reads from a streaming hot standby, never older than the reader's writes.

* the standby's lag behind the primary is measured (figures for docs/scaling.md);
* a session reading right after its own write gets that write, from the standby once
  it has replayed it; with replay paused, from the primary after the bounded wait,
  with a warning: a stale read never reaches the caller;
* with the standby stopped, reads go on (from the primary), and return to the standby
  once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventstore import EventStore, ReadReplica
from sessions import SQLAlchemySession, StoreSession

from ..reliability._figures import record
from .cluster import Cluster
from .conftest import Database

TASKS = 8


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


class Counted:
    """An engine on the standby that counts the connections reads take from it."""

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(asyncpg_url(url))
        self.checkouts = 0

        def checked_out(*_: Any) -> None:
            self.checkouts += 1

        event.listen(self.engine.sync_engine.pool, "checkout", checked_out)


@pytest.fixture
async def standby(cluster: Cluster, database: Database) -> AsyncIterator[Counted]:
    deadline = time.monotonic() + 30
    while (
        cluster.standby.sql(
            f"SELECT count(*) FROM pg_database WHERE datname = '{database.name}'", "postgres"
        )
        != "1"
    ):  # CREATE DATABASE reaches the standby through the WAL too
        assert time.monotonic() < deadline, "the database did not reach the standby"
        await asyncio.sleep(0.05)
    counted = Counted(database.standby)
    yield counted
    await counted.engine.dispose()


async def test_the_standby_lag_is_measured(database: Database, standby: Counted) -> None:
    """For each of many appends: the time from its commit on the primary until the
    standby has replayed it (its WAL position)."""
    primary = await asyncpg.connect(database.direct)
    replica = await asyncpg.connect(database.standby)
    lags: list[float] = []
    try:
        async with EventStore(database.direct) as store:
            session = StoreSession("lag", store)
            for i in range(100):
                await session.add_items([{"role": "user", "content": str(i)}])
                committed = time.perf_counter()
                lsn = await primary.fetchval("SELECT pg_current_wal_insert_lsn()::text")
                while not await replica.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", str(lsn)
                ):
                    assert time.perf_counter() - committed < 30, "the standby stopped replaying"
                    await asyncio.sleep(0.0005)
                lags.append(time.perf_counter() - committed)
    finally:
        await primary.close()
        await replica.close()
    lags.sort()
    figures = {
        "median_ms": round(statistics.median(lags) * 1000, 2),
        "p90_ms": round(lags[int(len(lags) * 0.9)] * 1000, 2),
        "max_ms": round(lags[-1] * 1000, 2),
    }
    print("standby replay lag after commit:", figures)
    record("standby_lag", **figures)


async def test_a_read_after_a_write_is_never_stale(
    database: Database, standby: Counted, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight sessions write then read, each read from the standby once it has the
    write; with the standby's replay paused, reads still answer the write (from the
    primary, after the bounded wait, saying so)."""
    async with EventStore(database.direct) as store:
        await store.ensure_tables()
    read_ms: list[float] = []

    async def converse(n: int) -> None:
        async with SQLAlchemySession(
            f"ryw-{n}", db_url=database.direct, read_engine=standby.engine
        ) as session:
            for i in range(20):
                item = {"role": "user", "content": f"{n}.{i}"}
                await session.add_items([item])
                started = time.perf_counter()
                assert await session.get_items(limit=1) == [item]
                read_ms.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(converse(n) for n in range(TASKS)))
    assert standby.checkouts > 0
    record("read_after_write", median_ms=round(statistics.median(read_ms), 2))

    replica = await asyncpg.connect(database.standby)
    caplog.set_level(logging.WARNING, logger="convstore.eventstore")
    try:
        async with SQLAlchemySession(
            "paused", db_url=database.direct, read_engine=standby.engine
        ) as session:
            await session.add_items([{"role": "user", "content": "before"}])
            assert await session.get_items() == [{"role": "user", "content": "before"}]
            await replica.execute("SELECT pg_wal_replay_pause()")
            try:
                await session.add_items([{"role": "user", "content": "while paused"}])
                items = await session.get_items()
                assert items[-1] == {"role": "user", "content": "while paused"}
                assert "has not replayed" in caplog.text
            finally:
                await replica.execute("SELECT pg_wal_replay_resume()")
            caplog.clear()
            before = standby.checkouts
            assert (await session.get_items())[-1] == {"role": "user", "content": "while paused"}
            assert standby.checkouts > before  # read on the standby again
            assert "has not replayed" not in caplog.text
    finally:
        await replica.close()


async def test_reads_go_on_while_the_standby_is_stopped(
    cluster: Cluster, database: Database, standby: Counted, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="convstore.eventstore")
    replica = ReadReplica(standby.engine, retry_after=0.2)
    async with EventStore(database.direct, read_replica=replica) as store:
        session = StoreSession("standby-down", store)
        await session.add_items([{"role": "user", "content": "one"}])
        assert await session.get_items() == [{"role": "user", "content": "one"}]
        cluster.standby.stop("fast")
        try:
            for i in range(5):
                await session.add_items([{"role": "user", "content": str(i)}])
                assert (await session.get_items(limit=1)) == [{"role": "user", "content": str(i)}]
            assert "read replica failed" in caplog.text
        finally:
            cluster.standby.start()
            cluster.wait_streaming()
        await asyncio.sleep(0.3)  # past retry_after
        before = standby.checkouts
        assert (await session.get_items(limit=1)) == [{"role": "user", "content": "4"}]
        assert standby.checkouts > before


def test_the_read_only_commands_run_on_the_standby(cluster: Cluster, database: Database) -> None:
    """audit, verify and history open a store on the standby's URL and read there."""

    async def write() -> None:
        async with EventStore(database.direct) as store:
            await StoreSession("cli", store).add_items([{"role": "user", "content": "hi"}])

    asyncio.run(write())
    cluster.wait_streaming()
    deadline = time.monotonic() + 30
    while cluster.replay_lag_bytes():
        assert time.monotonic() < deadline, "the standby did not catch up"
        time.sleep(0.05)
    for command in (["audit"], ["verify"], ["history", "cli"]):
        done = subprocess.run(
            [sys.executable, "-m", "sessions.cli", database.standby, *command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert "hi" in done.stdout

"""A PostgreSQL log restored into another cluster keeps positions in commit order.

Positions on PostgreSQL are transaction ids (plus a per-database offset) shifted left
by 20 bits. A log restored (pg_dump) from a cluster whose transaction counter was ahead
of the target's holds positions above the ones the target's transactions take:
simulated here by raising every stored position by 2**50, as if the source cluster had
run 2**30 more transactions. The next store that opens the database raises the offset
(eventstore/backends/postgres.py, ``align_positions``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import EventStore, ItemsAdded, encode_items
from eventstore.backends.postgres import PostgresDialect
from sessions import StoreSession
from sessions.admin import audit_database
from sessions.base import HISTORY

from .conftest import Backend, make_backend, reset_server_database

pytestmark = pytest.mark.postgres

RAISE_BY = 1 << 50
OFFSET = text("SELECT position FROM convstore_head WHERE name = 'log'")


def added(value: object) -> ItemsAdded:
    return ItemsAdded(items=encode_items([value]))


async def restore_ahead(store: EventStore) -> int:
    """Raise every stored position by 2**50 (events, projection rows, tracking rows),
    as a dump of the same log taken in that cluster would hold them; return the
    highest event position."""

    def move(conn: Connection) -> int:
        for name in inspect(conn).get_table_names():
            columns = {c["name"] for c in inspect(conn).get_columns(name)}
            if name.startswith("convstore_") and name != "convstore_head" and "position" in columns:
                conn.execute(text(f"UPDATE {name} SET position = position + :by"), {"by": RAISE_BY})
        return int(conn.execute(text("SELECT max(position) FROM convstore_events")).scalar_one())

    return await store.run(move, write=True)


async def offset(store: EventStore) -> int:
    return int(await store.run(lambda conn: conn.execute(OFFSET).scalar_one()))


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = await make_backend("postgres", tmp_path)
    yield backend
    await backend.close()
    await reset_server_database(backend.target)  # leave no log ahead of the cluster


async def test_a_log_restored_ahead_of_the_cluster_is_followed_by_new_events(
    postgres: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    before = postgres.store(projectors=(HISTORY,))
    session = StoreSession("restored", before)
    await session.add_items([{"role": "user", "content": "before the backup"}])
    await session.add_items([{"role": "assistant", "content": "noted"}])
    assert await offset(before) == 0
    last_restored = await restore_ahead(before)

    with caplog.at_level(logging.WARNING, logger="convstore"):
        after = postgres.store(projectors=(HISTORY,))  # a new process, as after a restart
        resumed = StoreSession("restored", after)
        await resumed.add_items([{"role": "user", "content": "after the restore"}])
    positions = [e.position for e in await after.read_stream("restored")]
    assert positions[-1] > last_restored
    assert positions == sorted(positions)
    raised = await offset(after)
    [warning] = [r for r in caplog.records if r.name.startswith("convstore.")]
    assert warning.levelno == logging.WARNING
    assert f"from 0 to {raised}" in warning.getMessage()
    tail = await after.read_all(after_position=last_restored)
    assert [e.position for e in tail] == [positions[-1]]
    assert [e.position for e in await after.read_all()] == positions

    # The store opened before the restore reads the offset with every append.
    await session.add_items([{"role": "assistant", "content": "from the older store"}])
    assert (await before.read_stream("restored"))[-1].position > positions[-1]
    report = await audit_database(after)
    assert report.ok, report.findings
    assert [i["content"] for i in await resumed.get_items()] == [
        "before the backup",
        "noted",
        "after the restore",
        "from the older store",
    ]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="convstore"):
        again = postgres.store(projectors=(HISTORY,))
        await again.append("other", [added(1)])
    assert await offset(again) == raised  # raised once
    assert not [r for r in caplog.records if r.name.startswith("convstore.")]


async def test_an_empty_or_normal_log_keeps_offset_zero(postgres: Backend) -> None:
    store = postgres.store()
    assert await store.head_position() == 0
    assert await offset(store) == 0
    await store.append("s", [added(1)])
    second = postgres.store()
    await second.append("s", [added(2)])
    assert await offset(second) == 0


async def test_an_append_in_flight_holds_the_raise_back(postgres: Backend) -> None:
    """The raise waits for an append that read the old offset, and an older transaction
    that appends only after the raise still lands above every stored position."""
    store = postgres.store()
    await store.append("s", [added(1)])
    last_restored = await restore_ahead(store)
    dialect = PostgresDialect()
    async with store.engine.connect() as in_flight, store.engine.connect() as older:
        # An older transaction: it has its id before the raise, appends after it.
        older_tx = await older.begin()
        await older.execute(text("SELECT pg_current_xact_id()"))
        # An append in flight with the old offset: it holds the head row FOR SHARE.
        in_flight_tx = await in_flight.begin()
        stale, _ = await in_flight.run_sync(lambda c: dialect.reserve_positions(c, 1))
        assert stale < last_restored

        opening = asyncio.ensure_future(postgres.store().append("t", [added(2)]))
        await asyncio.sleep(0.5)
        assert not opening.done()  # waiting for the append in flight
        await in_flight_tx.rollback()
        opened = await opening
        assert opened.last_position > last_restored

        late, _ = await older.run_sync(lambda c: dialect.reserve_positions(c, 1))
        assert late > last_restored
        await older_tx.rollback()


async def test_a_read_only_connection_only_warns(
    postgres: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A standby (here: a connection that refuses writes, as one does) cannot raise the
    offset: it says so, and the first read-write store raises it."""
    store = postgres.store()
    await store.append("s", [added(1)])
    last_restored = await restore_ahead(store)
    url = make_url(postgres.target).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(
        url, connect_args={"server_settings": {"default_transaction_read_only": "on"}}
    )
    try:
        with caplog.at_level(logging.WARNING, logger="convstore"):
            async with EventStore(engine, create_tables=False, projectors=()) as replica:
                assert [e.version for e in await replica.read_stream("s")] == [1]
        [warning] = [r for r in caplog.records if r.name.startswith("convstore.")]
        assert "read-write connection" in warning.getMessage()
        assert await offset(store) == 0
    finally:
        await engine.dispose()
    writer = postgres.store()
    assert (await writer.append("s", [added(2)])).last_position > last_restored

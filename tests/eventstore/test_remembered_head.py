"""An append may start from the stream head its store wrote last (SQLite: no read of
the stream's row), and a head that is no longer the stored one is never trusted.

Every backend runs these checks: where heads are not remembered (PostgreSQL, MariaDB)
they hold all the same.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, text

from eventstore import ConcurrencyError, EventStore, ItemsAdded, encode_items
from eventstore.audit import audit

from ..conftest import Backend
from .chain_check import assert_chain_valid


def added(value: Any) -> ItemsAdded:
    return ItemsAdded(items=encode_items([value]))


async def assert_log_sound(store: EventStore, stream_id: str, versions: int) -> None:
    events = await store.read_stream(stream_id)
    assert [e.version for e in events] == list(range(1, versions + 1))
    assert_chain_valid(events)
    report = await audit(store)
    assert report.ok, report.findings


async def test_a_stream_written_by_another_store_is_read_again(shared_backend: Backend) -> None:
    mine, other = shared_backend.store(), shared_backend.store()
    await mine.append("s", [added(1)])
    await mine.append("s", [added(2)])
    await other.append("s", [added(3)])  # the head ``mine`` remembers is stale now
    result = await mine.append("s", [added(4)], expected_version=3)
    assert (result.first_version, result.last_version) == (4, 4)
    await assert_log_sound(mine, "s", 4)


async def test_a_stale_head_still_fails_a_wrong_expected_version(
    shared_backend: Backend,
) -> None:
    mine, other = shared_backend.store(), shared_backend.store()
    await mine.append("s", [added(1)])
    await other.append("s", [added(2)])
    with pytest.raises(ConcurrencyError):
        await mine.append("s", [added(3)], expected_version=1)  # what ``mine`` last wrote
    await assert_log_sound(mine, "s", 2)


async def test_a_stream_removed_and_written_again_to_the_same_version(
    shared_backend: Backend,
) -> None:
    """The remembered (version, hash) names a version the new stream also reaches: only
    the hash tells them apart, and the next append must chain to the stored one."""
    mine, other = shared_backend.store(), shared_backend.store()
    await mine.append("s", [added("a1")])
    await mine.append("s", [added("a2")])

    def remove(conn: Connection) -> None:  # what retention does to a session's rows
        conn.execute(text("DELETE FROM convstore_events WHERE stream_id = 's'"))
        conn.execute(text("DELETE FROM convstore_streams WHERE stream_id = 's'"))

    await other.run(remove, write=True)
    await other.append("s", [added("b1")])
    await other.append("s", [added("b2")])  # version 2 again, another head hash
    await mine.append("s", [added("a3")])
    events = await mine.read_stream("s")
    assert [e.version for e in events] == [1, 2, 3]
    assert_chain_valid(events)


async def test_a_pop_that_decides_nothing_on_a_stale_head(shared_backend: Backend) -> None:
    mine, other = shared_backend.store(), shared_backend.store()
    await mine.append("s", [added(1)])
    await other.append("s", [added(2)])
    seen: list[int] = []

    def decide(conn: Connection, version: int) -> None:
        seen.append(version)
        return None

    assert await mine.append_decided("s", decide) is None
    assert seen[-1] == 2  # decided on the stored version, not the remembered one


async def test_an_append_after_this_stores_own_reads_no_stream_row(tmp_path: Any) -> None:
    async with EventStore(tmp_path / "lean.db", projectors=()) as store:
        await store.append("s", [added(1)])
        statements: list[str] = []

        def trace(conn: Connection) -> None:
            conn.connection.driver_connection.set_trace_callback(statements.append)  # type: ignore[union-attr]

        await store.run(trace)  # the writer's connection (not quick: not the reader)
        await store.append("s", [added(2)])
        await store.run(lambda conn: conn.connection.driver_connection.set_trace_callback(None))  # type: ignore[union-attr]
        writes = [s.split()[0] for s in statements]
        assert not any(s.startswith("SELECT") for s in statements), statements
        assert writes == ["BEGIN", "UPDATE", "UPDATE", "INSERT", "COMMIT"], statements
        await assert_log_sound(store, "s", 2)

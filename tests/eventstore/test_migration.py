"""Log tables written by an earlier release are migrated in place."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, inspect, select, text

from eventstore import ItemsAdded, SchemaError, encode_items, schema, transactions

from ..conftest import Backend
from .chain_check import assert_chain_valid
from .positions import assert_positions


def added(value: object) -> ItemsAdded:
    return ItemsAdded(items=encode_items([value]))


def _forget_open_databases() -> None:
    """As if the next store ran in a new process, which knows nothing of the tables."""
    transactions._state_by_key.clear()
    transactions._state_by_engine.clear()


async def test_log_tables_of_revision_2_are_migrated(shared_backend: Backend) -> None:
    store = shared_backend.store()
    for n in range(3):
        await store.append(f"s{n % 2}", [added(n)])

    def make_revision_2(conn: Connection) -> None:
        # Revision 2: positions 1, 2, 3 … from the head row, which every append
        # advanced, and an index on the streams' update times.
        e = schema.events
        old = [row.position for row in conn.execute(select(e.c.position).order_by(e.c.position))]
        for dense, position in enumerate(old, start=1):
            conn.execute(e.update().where(e.c.position == position).values(position=dense))
        conn.execute(text(f"UPDATE convstore_head SET position = {len(old)}"))
        conn.execute(
            text("CREATE INDEX convstore_streams_updated_at ON convstore_streams (updated_at)")
        )
        conn.execute(text("UPDATE convstore_schema SET version = 2 WHERE component = 'eventstore'"))

    await store.run(make_revision_2, write=True)
    _forget_open_databases()
    with pytest.raises(SchemaError, match="migrating"):
        await shared_backend.store(create_tables=False).append("s0", [added(3)])
    _forget_open_databases()
    store = shared_backend.store()
    result = await store.append("s0", [added(3)], expected_version=2)
    assert result.last_position > 3  # never below a position handed out before
    log = await store.read_all()
    assert [e.position for e in log][:3] == [1, 2, 3]
    assert_positions(store, [e.position for e in log])
    assert [e.stream_id for e in log] == ["s0", "s1", "s0", "s0"]
    assert_chain_valid(await store.read_stream("s0"))

    def shape(conn: Connection) -> tuple[int, list[str]]:
        version = conn.execute(
            text("SELECT version FROM convstore_schema WHERE component = 'eventstore'")
        ).scalar_one()
        indexes = [i["name"] or "" for i in inspect(conn).get_indexes("convstore_streams")]
        return int(version), indexes

    version, indexes = await store.run(shape)
    assert version == schema.SCHEMA_VERSION == 4
    assert "convstore_streams_updated_at" not in indexes
    if not store.dense_positions:  # the head row's old count is not a transaction-id offset
        assert await store.run(_head_position) == 0


def _head_position(conn: Connection) -> int:
    return int(conn.execute(text("SELECT position FROM convstore_head")).scalar_one())


async def test_log_tables_of_revision_3_are_migrated(shared_backend: Backend) -> None:
    """Revision 3 left the head row's last dense position in place on PostgreSQL, where
    revision 4 reads the row as an offset to transaction ids: it starts at 0 there."""
    store = shared_backend.store()
    first = await store.append("s", [added(1)])

    def make_revision_3(conn: Connection) -> None:
        if not store.dense_positions:
            conn.execute(text("UPDATE convstore_head SET position = 1000000000"))
        conn.execute(text("UPDATE convstore_schema SET version = 3 WHERE component = 'eventstore'"))

    await store.run(make_revision_3, write=True)
    _forget_open_databases()
    store = shared_backend.store()
    second = await store.append("s", [added(2)])
    assert await store.run(_head_position) == (0 if not store.dense_positions else 2)
    assert second.last_position > first.last_position
    if not store.dense_positions:  # no jump of 10**9 transaction ids
        assert second.last_position >> 20 < (first.last_position >> 20) + 10**9
    assert_positions(store, [e.position for e in await store.read_all()])


async def test_a_log_of_a_newer_revision_is_refused(shared_backend: Backend) -> None:
    store = shared_backend.store()
    await store.append("s", [added(1)])
    await store.run(
        lambda conn: conn.execute(
            text("UPDATE convstore_schema SET version = 99 WHERE component = 'eventstore'")
        ),
        write=True,
    )
    _forget_open_databases()
    with pytest.raises(SchemaError, match="newer than this release"):
        await shared_backend.store().append("s", [added(2)])


async def test_positions_stay_above_the_head_rows_floor(backend: Backend) -> None:
    """Where positions are gapless, they continue after the head row's position, even
    where the newest events are gone (retention): no position is handed out twice."""
    store = backend.store()
    first = await store.append("s", [added(1)])
    if not store.dense_positions:
        pytest.skip("positions come from transaction ids here")
    await store.run(
        lambda conn: conn.execute(text("UPDATE convstore_head SET position = 100")), write=True
    )
    second = await store.append("s", [added(2)])
    assert (first.last_position, second.last_position) == (1, 101)
    assert await store.head_position() == 101

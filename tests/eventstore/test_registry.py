"""The set of projections belongs to the database, not to whoever opened it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    Table,
    delete,
    select,
    text,
    update,
)

from eventstore import (
    BaseProjector,
    EventStore,
    ItemsAdded,
    RecordedEvent,
    Rows,
    SchemaError,
    encode_items,
    registry,
    schema,
)
from eventstore.schema import Key
from projections import HistoryProjector
from sessions import SQLiteSession

from ..conftest import Backend
from ..projections.replay_check import assert_matches_replay


class CountProjector:
    """Counts the events of each stream (a stand-in for any later projection)."""

    def __init__(self, name: str = "counts", schema_version: int = 1) -> None:
        self.name = name
        self.schema_version = schema_version
        self.metadata = MetaData()
        self.table = Table(
            f"convstore_test_{name}",
            self.metadata,
            Column("stream_id", Key(255), primary_key=True),
            Column("events", BigInteger, nullable=False),
        )

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        t = self.table
        for recorded in events:
            done = conn.execute(
                update(t).where(t.c.stream_id == recorded.stream_id).values(events=t.c.events + 1)
            ).rowcount
            if not done:
                conn.execute(t.insert().values(stream_id=recorded.stream_id, events=1))

    def reset(self, conn: Connection) -> None:
        conn.execute(delete(self.table))

    def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
        return {"counts": {(stream_id,): (len(events),)}} if events else {"counts": {}}

    def live_rows(self, conn: Connection, stream_id: str) -> Rows:
        t = self.table
        rows = conn.execute(select(t).where(t.c.stream_id == stream_id))
        return {"counts": {(r.stream_id,): (r.events,) for r in rows}}

    def stream_ids(self, conn: Connection) -> set[str]:
        return set(conn.execute(select(self.table.c.stream_id)).scalars())

    async def counts(self, store: EventStore) -> dict[str, int]:
        t = self.table
        rows = await store.run(lambda conn: conn.execute(select(t)).all())
        return {r.stream_id: r.events for r in rows}


HISTORY = HistoryProjector()


def added(*values: Any) -> ItemsAdded:
    return ItemsAdded(items=encode_items(list(values)))


async def test_a_store_keeps_projections_it_was_not_given(shared_backend: Backend) -> None:
    counts = CountProjector()
    with_counts = shared_backend.store(projectors=(HISTORY, counts))
    await with_counts.append("s", [added(1)])
    history_only = shared_backend.store(projectors=(HISTORY,))
    await history_only.append("s", [added(2)])
    await history_only.append("t", [added(3)])
    assert await counts.counts(with_counts) == {"s": 2, "t": 1}
    assert {p.name for p in history_only.projectors} == {"history", "counts"}
    await assert_matches_replay(with_counts)


async def test_a_projection_added_later_reaches_a_store_opened_before(
    shared_backend: Backend,
) -> None:
    early = shared_backend.store(projectors=(HISTORY,))
    await early.append("s", [added(1)])  # opened (and cached) before "counts" exists
    counts = CountProjector()
    late = shared_backend.store(projectors=(HISTORY, counts))
    await late.append("s", [added(2)])
    # The early store's idea of the live set is stale: its append sees a new
    # generation, reloads the set, and keeps "counts" too.
    await early.append("s", [added(3)])
    await early.append("u", [added(4)])
    assert await counts.counts(late) == {"s": 3, "u": 1}
    await assert_matches_replay(late)


async def test_a_new_projection_is_caught_up_from_the_log(shared_backend: Backend) -> None:
    store = shared_backend.store(projectors=(HISTORY,))
    for n in range(7):
        await store.append("a" if n % 2 else "b", [added(n)])
    counts = CountProjector()
    with_counts = shared_backend.store(projectors=(HISTORY, counts))
    assert await with_counts.stream_info("a") is not None  # opening it catches "counts" up
    assert await counts.counts(with_counts) == {"a": 3, "b": 4}
    await store.append("a", [added("after")])
    assert await counts.counts(with_counts) == {"a": 4, "b": 4}
    await assert_matches_replay(with_counts)


async def test_a_behind_projection_is_caught_up_before_the_next_append(
    shared_backend: Backend,
) -> None:
    counts = CountProjector()
    store = shared_backend.store(projectors=(HISTORY, counts))
    for n in range(5):
        await store.append("s", [added(n)])

    def fall_behind(conn: Connection) -> None:
        counts.reset(conn)
        registry.set_behind(conn, counts.name, 0)

    await store.run(fall_behind, write=True)
    # A process that does not know "counts" appends all the same (it is not live).
    registry._registered.pop("counts", None)
    other = shared_backend.store(projectors=(HISTORY,))
    await other.append("s", [added(5)])
    # The next store that knows it catches it up before its first append.
    again = shared_backend.store(projectors=(HISTORY, counts))
    await again.append("s", [added(6)])
    assert await counts.counts(again) == {"s": 7}
    await assert_matches_replay(again)


class ReplayingCounts(CountProjector):
    """A protocol-only projector (no BaseProjector) that declares both optional
    abilities: it loads a catch-up through its own ``replay``, and reads no position."""

    reads_positions = False

    def __init__(self) -> None:
        super().__init__("replaying")
        self.applied = self.replayed = 0

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        self.applied += len(events)
        super().apply(conn, events)

    def replay(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        self.replayed += len(events)
        super().apply(conn, events)


async def test_a_protocol_projector_is_adopted_with_the_abilities_it_declares(
    shared_backend: Backend,
) -> None:
    store = shared_backend.store(projectors=(HISTORY,))
    for n in range(5):
        await store.append("s", [added(n)])
    counts = ReplayingCounts()
    later = shared_backend.store(projectors=(HISTORY, counts))
    try:
        await later.append("s", [added(5)])  # caught up (replay), then appended (apply)
        assert (counts.replayed, counts.applied) == (5, 1)
        assert await counts.counts(later) == {"s": 6}
        adopted = {p.name: p for p in later.projectors}["replaying"]
        assert isinstance(adopted, BaseProjector)
        assert not adopted.reads_positions
    finally:
        registry._registered.pop("replaying", None)
    assert registry.adopt(CountProjector("plain")).reads_positions  # the default
    assert registry.adopt(HISTORY) is HISTORY  # a BaseProjector is kept as it is


def test_a_base_projector_replays_with_apply_unless_it_says_otherwise() -> None:
    applied: list[Sequence[RecordedEvent]] = []

    class Minimal(BaseProjector):
        name, schema_version, metadata = "minimal", 1, MetaData()

        def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
            applied.append(events)

        def reset(self, conn: Connection) -> None:
            pass

        def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
            return {}

        def live_rows(self, conn: Connection, stream_id: str) -> Rows:
            return {}

        def stream_ids(self, conn: Connection) -> set[str]:
            return set()

    projector = Minimal()
    projector.replay(None, [])  # type: ignore[arg-type]
    assert applied == [[]]
    assert projector.reads_positions  # positions are taken first unless it says not


async def test_a_database_keeping_an_unknown_projection_refuses_appends(
    shared_backend: Backend,
) -> None:
    ghost = CountProjector("ghost")
    with_ghost = shared_backend.store(projectors=(HISTORY, ghost))
    await with_ghost.append("s", [added(1)])
    # As in another process, which has never heard of "ghost":
    registry._registered.pop("ghost")
    without = shared_backend.store(projectors=(HISTORY,))
    with pytest.raises(SchemaError, match="ghost"):
        await without.append("s", [added(2)])
    assert [e.version for e in await without.read_stream("s")] == [1]  # nothing written
    registry.register_projector(ghost)
    try:
        await without.append("s", [added(2)])
    finally:
        registry._registered.pop("ghost")
    assert await ghost.counts(with_ghost) == {"s": 2}


async def test_projection_tables_of_an_older_shape_are_rebuilt(shared_backend: Backend) -> None:
    store = shared_backend.store(projectors=(HISTORY, CountProjector(schema_version=1)))
    for n in range(3):
        await store.append("s", [added(n)])
    newer = CountProjector(schema_version=2)
    upgraded = shared_backend.store(projectors=(HISTORY, newer))
    await upgraded.append("s", [added(3)])
    assert await newer.counts(upgraded) == {"s": 4}
    sv = schema.schema_versions
    stored = await upgraded.run(
        lambda conn: conn.execute(select(sv.c.version).where(sv.c.component == "counts")).scalar()
    )
    assert stored == 2


async def test_a_bare_event_store_writes_what_sessions_read(tmp_path: Path) -> None:
    path = tmp_path / "conversations.db"
    async with EventStore(path) as store:  # no projectors named: the installed defaults
        assert "history" in {p.name for p in store.projectors} | {
            p.name for p in registry.default_projectors()
        }
        await store.append("user_123", [added({"role": "user", "content": "hi"})])
    async with SQLiteSession("user_123", path) as session:
        assert await session.get_items() == [{"role": "user", "content": "hi"}]
        await session.add_items([{"role": "assistant", "content": "hello"}])
    async with EventStore(path) as store:
        await store.append("user_123", [added({"role": "user", "content": "again"})])
        await assert_matches_replay(store)
    async with SQLiteSession("user_123", path) as session:
        assert [i["content"] for i in await session.get_items()] == ["hi", "hello", "again"]


async def test_a_database_file_created_again_at_the_same_path_is_new(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    async with SQLiteSession("s", path) as session:
        await session.add_items([{"n": 1}])
    for name in os.listdir(tmp_path):
        os.remove(tmp_path / name)
    async with SQLiteSession("s", path) as session:
        assert await session.get_items() == []
        await session.add_items([{"n": 2}])
        assert await session.get_items() == [{"n": 2}]


async def test_log_tables_of_revision_1_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with EventStore(path, projectors=(HISTORY,)) as store:
        await store.append("s", [added(1)])

        def make_revision_1(conn: Connection) -> None:
            # Revision 1 advanced the head and tracking rows with every append.
            conn.execute(text("UPDATE convstore_head SET position = 1"))
            conn.execute(text("UPDATE convstore_tracking SET position = 1"))
            conn.execute(text("ALTER TABLE convstore_head DROP COLUMN generation"))
            conn.execute(text("ALTER TABLE convstore_tracking DROP COLUMN live"))
            conn.execute(
                text("UPDATE convstore_schema SET version = 1 WHERE component = 'eventstore'")
            )

        await store.run(make_revision_1, write=True)
    async with EventStore(path, projectors=(HISTORY,), create_tables=False) as store:
        with pytest.raises(SchemaError, match="migrating"):
            await store.append("s", [added(2)])
    async with EventStore(path, projectors=(HISTORY,)) as store:
        await store.append("s", [added(2)])
        await assert_matches_replay(store)
    async with SQLiteSession("s", path) as session:
        assert await session.get_items() == [1, 2]

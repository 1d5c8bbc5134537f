"""MariaDB: an append takes its positions in the statement that commits it.

``tests/eventstore/test_stalled_writer.py`` shows what this is for (a paused append
does not stop other sessions); these tests pin down how it behaves at its edges: the
live set changing under it, an append too large for one statement, a projection that
reads positions, write transactions at READ COMMITTED, and an error inside the
committing statement leaving nothing behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, func, select, text

from eventstore import EventStore, IntegrityError, ItemsAdded, RecordedEvent, encode_items
from eventstore.audit import audit
from eventstore.backends.mysql import AT_COMMIT_BYTES
from projections import HistoryProjector

from ..conftest import Backend, make_engine
from .positions import assert_positions
from .test_registry import CountProjector

HISTORY = HistoryProjector()


def added(*values: Any) -> ItemsAdded:
    return ItemsAdded(items=encode_items(list(values)))


@pytest.fixture
def mariadb(backend: Backend) -> Backend:
    if backend.name != "mysql":
        pytest.skip("MariaDB's compound statements")
    return backend


def count_commits(store: EventStore) -> list[int | None]:
    """Record what every committing statement of ``store`` returned."""
    returned: list[int | None] = []
    commit = store._dialect.commit_append

    def counted(conn: Connection, **values: Any) -> int | None:
        last = commit(conn, **values)
        returned.append(last)
        return last

    store._dialect.commit_append = counted  # type: ignore[method-assign]
    return returned


async def test_appends_are_numbered_as_they_commit(mariadb: Backend) -> None:
    store = mariadb.store(projectors=(HISTORY,))
    commits = count_commits(store)
    first = await store.append("s", [added(1)], on_new_stream=[added(0)])
    second = await store.append("s", [added(2), added(3)])
    assert (first.first_version, first.last_version) == (2, 2)  # after the preamble
    assert (first.first_position, first.last_position) == (2, 2)
    assert (second.first_version, second.last_version) == (2 + 1, 2 + 2)
    assert (second.first_position, second.last_position) == (3, 4)
    assert commits == [2, 4]
    events = await store.read_all()
    assert [e.position for e in events] == [1, 2, 3, 4]
    assert_positions(store, [e.position for e in events])
    assert (await audit(store)).ok


async def test_a_live_set_changed_meanwhile_is_signalled_and_applied_again(
    mariadb: Backend,
) -> None:
    store = mariadb.store(projectors=(HISTORY,))
    await store.append("s", [added(1)])
    commits = count_commits(store)
    # Another process changed the set of projections since this store read it.
    await store.run(
        lambda conn: conn.execute(
            text("UPDATE convstore_head SET generation = generation + 1 WHERE name = 'log'")
        ),
        write=True,
    )
    result = await store.append("s", [added(2)])
    assert commits == [None, 2]  # refused at commit, then applied to the set read again
    assert result.last_position == 2
    rows = await store.run(lambda c: HISTORY.read_items(c, "s", "main", None))
    assert [bytes(r) for r in rows] == [b"1", b"2"]  # the refused attempt left no row
    assert (await audit(store)).ok


async def test_a_large_append_takes_its_positions_first(mariadb: Backend) -> None:
    store = mariadb.store(projectors=(HISTORY,))
    commits = count_commits(store)
    big = "x" * AT_COMMIT_BYTES  # over it as sent
    result = await store.append("s", [added(big)])
    await store.append("s", [added("small")])
    assert commits == [2]  # only the small one is written at commit
    assert result.last_position == 1
    assert (await audit(store)).ok


class PositionProjector(CountProjector):
    """A projection that reads positions (it did not say ``reads_positions = False``)."""

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        assert all(e.position > 0 for e in events)
        super().apply(conn, events)


async def test_a_projection_that_reads_positions_gets_them(mariadb: Backend) -> None:
    counts = PositionProjector("positioned")
    store = mariadb.store(projectors=(HISTORY, counts))
    commits = count_commits(store)
    await store.append("s", [added(1)])
    await store.append("s", [added(2)])
    assert commits == []  # positions taken first, before apply
    assert await counts.counts(store) == {"s": 2}


def sees_later_commits(conn: Connection) -> bool:
    """Whether this transaction sees a commit made after its first read (READ
    COMMITTED does; REPEATABLE READ keeps the snapshot of that first read)."""
    query = text("SELECT updated_at FROM convstore_streams WHERE stream_id = 's'")
    before = conn.execute(query).scalar_one()
    with conn.engine.connect() as other:
        other.execute(
            text("UPDATE convstore_streams SET updated_at = updated_at + 1 WHERE stream_id = 's'")
        )
        other.commit()
    return bool(conn.execute(query).scalar_one() != before)


async def test_writes_run_at_read_committed(mariadb: Backend) -> None:
    own = mariadb.store()
    await own.append("s", [added(1)])
    assert await own.run(sees_later_commits, write=True)
    engine = await make_engine(mariadb)  # at the server's default, REPEATABLE READ
    try:
        handed = EventStore(engine)
        try:
            assert await handed.run(sees_later_commits, write=True)
            assert await handed.run(sees_later_commits, write=True)
            # Its reads keep the connection's own level (the check would fail there).
            assert not await handed.run(sees_later_commits)
        finally:
            await handed.close()
    finally:
        await engine.dispose()


async def test_an_error_in_the_committing_statement_leaves_nothing(mariadb: Backend) -> None:
    store = mariadb.store(projectors=(HISTORY,))
    await store.append("s", [added(1)])
    # A stream row set back under its events (by hand): the append writes version 1
    # again, and the committing statement's insert fails on (stream_id, version) after
    # this append's projection rows were written; the server rolls it all back.
    await store.run(
        lambda conn: conn.execute(
            text("UPDATE convstore_streams SET version = 0 WHERE stream_id = 's'")
        ),
        write=True,
    )
    with pytest.raises(IntegrityError, match="Duplicate"):
        await store.append("s", [added(2)])
    items = HISTORY.items
    count = await store.run(lambda c: c.execute(select(func.count()).select_from(items)).scalar())
    assert count == 1
    row = await store.run(
        lambda c: c.execute(
            text(
                "SELECT (SELECT position FROM convstore_head), "
                "(SELECT version FROM convstore_streams WHERE stream_id = 's')"
            )
        ).one()
    )
    assert tuple(row) == (1, 0)  # no position handed out, the stream row untouched


def test_the_committing_statement_stays_within_the_servers_packet_limit() -> None:
    from types import SimpleNamespace

    from eventstore.backends.mysql import MySQLDialect

    dialect = MySQLDialect()
    mariadb: Any = SimpleNamespace(dialect=SimpleNamespace(is_mariadb=True))
    mysql: Any = SimpleNamespace(dialect=SimpleNamespace(is_mariadb=False))

    def positions_at_commit(conn: Any, payloads: list[bytes], limit: int | None) -> bool:
        events = [SimpleNamespace(payload=payload) for payload in payloads]
        write: Any = SimpleNamespace(events=events, statement_limit=limit)
        return dialect._at_commit(conn, write)

    payloads = [b"x" * 100, b"'" * 50]  # 200 bytes as sent: a quote is escaped
    assert positions_at_commit(mariadb, payloads, None)
    assert positions_at_commit(mariadb, payloads, 400)
    assert not positions_at_commit(mariadb, payloads, 399)  # over half the limit
    assert not positions_at_commit(mariadb, [b"x" * (AT_COMMIT_BYTES + 1)], None)
    assert not positions_at_commit(mysql, payloads, None)  # no compound statements

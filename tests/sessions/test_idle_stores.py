"""The store of a SQLite file outlives its last session for a while (sessions/sqlite.py):
the next session on the file takes it over with no thread started and no registry read,
unless the path names another file now or a process changed its tables; it is closed
(its WAL checkpointed, the -wal and -shm files removed) when the idle time is up, at
process exit, or by ``release_sqlite_files``."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from eventstore import InvalidArgumentError, registry
from sessions import SQLiteSession, release_sqlite_files
from sessions import sqlite as sqlite_sessions

from .forking import forking, in_forked_child, needs_fork


class Counts:
    def __init__(self) -> None:
        self.threads = 0
        self.registry_reads = 0


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    """Threads started and reads of the live projection set, counted."""
    found = Counts()
    start, live_set = threading.Thread.start, registry.live_set

    def counted_start(self: threading.Thread) -> None:
        found.threads += 1
        start(self)

    def counted_live_set(conn: Any) -> Any:
        found.registry_reads += 1
        return live_set(conn)

    monkeypatch.setattr(threading.Thread, "start", counted_start)
    monkeypatch.setattr(registry, "live_set", counted_live_set)
    return found


def companions(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


async def test_a_session_per_request_reuses_the_idle_store(tmp_path: Path, counts: Counts) -> None:
    path = tmp_path / "c.db"
    async with SQLiteSession("warm", path) as first:
        await first.add_items([{"n": 0}])
    store = first.store
    assert not store.closed
    counts.threads = counts.registry_reads = 0
    for n in range(5):
        session = SQLiteSession(f"user-{n}", path)
        assert session.store is store
        await session.add_items([{"n": n}])
        assert await session.get_items() == [{"n": n}]
        await session.close()
    assert (counts.threads, counts.registry_reads) == (0, 0)


async def test_a_database_replaced_at_the_path_gets_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteSession("s", path) as session:
        await session.add_items([{"n": 1}])
    old = session.store
    for name in os.listdir(tmp_path):
        os.rename(tmp_path / name, tmp_path / f"moved-{name}")
    async with SQLiteSession("s", path) as again:
        assert again.store is not old
        assert await again.get_items() == []
        await again.add_items([{"n": 2}])
    assert release_sqlite_files() == 1
    for _ in range(1000):  # the old store is closed by the timer thread
        if old.closed:
            break
        await asyncio.sleep(0.01)
    assert old.closed
    async with SQLiteSession("s", path) as again:
        assert await again.get_items() == [{"n": 2}]
    async with SQLiteSession("s", tmp_path / "moved-c.db") as moved:
        assert await moved.get_items() == [{"n": 1}]


async def test_tables_changed_by_another_process_are_checked_again(
    tmp_path: Path, counts: Counts
) -> None:
    path = tmp_path / "c.db"
    async with SQLiteSession("s", path) as session:
        await session.add_items([{"n": 1}])
    with sqlite3.connect(path) as other:  # another process's change to the schema
        other.execute("CREATE TABLE notes (body TEXT)")
    other.close()
    counts.registry_reads = 0
    async with SQLiteSession("s", path) as again:
        assert again.store is session.store
        assert await again.get_items() == [{"n": 1}]
    assert counts.registry_reads == 1, "a new store's check, once"


async def test_release_checkpoints_and_removes_the_wal_files(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    other = tmp_path / "other.db"
    async with SQLiteSession("s", path) as session, SQLiteSession("s", other) as held:
        await session.add_items([{"n": 1}])
        await held.add_items([{"n": 1}])
        assert companions(path) == ["c.db-shm", "c.db-wal"]
        assert release_sqlite_files(path) == 0, "a file an open session holds stays open"
    assert companions(path) == ["c.db-shm", "c.db-wal"]
    assert release_sqlite_files(path) == 1
    assert session.store.closed
    assert companions(path) == []
    with sqlite3.connect(path) as conn:  # everything is in the database file
        assert conn.execute("SELECT count(*) FROM convstore_events").fetchone() == (2,)
    conn.close()
    assert companions(other) == ["other.db-shm", "other.db-wal"]
    assert release_sqlite_files() == 1
    assert companions(other) == []
    assert release_sqlite_files() == 0
    with pytest.raises(InvalidArgumentError):
        release_sqlite_files(7)  # type: ignore[arg-type]


async def written_and_left(
    path: Path, monkeypatch: pytest.MonkeyPatch, idle_seconds: float
) -> SQLiteSession:
    """With stores kept ``idle_seconds`` after their last session, the session that
    wrote one item to ``path``, closed."""
    monkeypatch.setattr(sqlite_sessions, "IDLE_SECONDS", idle_seconds)
    async with SQLiteSession("s", path) as session:
        await session.add_items([{"n": 1}])
    return session


async def test_the_idle_time_closes_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.db"
    session = await written_and_left(path, monkeypatch, 0.05)
    for _ in range(1000):  # (no wall-clock bound: polled until the timer has closed it)
        if session.store.closed and not companions(path):
            break
        await asyncio.sleep(0.01)
    assert session.store.closed
    assert companions(path) == []
    async with SQLiteSession("s", path) as again:  # a new store, as after any close
        assert again.store is not session.store
        assert await again.get_items() == [{"n": 1}]


async def test_no_idle_time_closes_with_the_last_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.db"
    session = await written_and_left(path, monkeypatch, 0)
    assert session.store.closed
    assert companions(path) == []


# -- a child made by os.fork() -------------------------------------------------------


@needs_fork
@forking
async def test_a_forked_child_opens_its_own_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_sessions, "IDLE_SECONDS", 0.05)  # (the child inherits it)
    path = tmp_path / "c.db"
    held = SQLiteSession("parent", path)
    await held.add_items([{"n": 1}])
    parents = held.store

    async def check() -> None:
        session = SQLiteSession("child", path)
        assert session.store is not parents, "the parent's store crossed the fork"
        await session.add_items([{"n": 2}])
        assert await session.get_items() == [{"n": 2}]
        async with SQLiteSession("parent", path) as other:
            assert await other.get_items() == [{"n": 1}]
        await session.close()
        for _ in range(1000):  # the child's own timer thread closes its idle store
            if session.store.closed:
                break
            await asyncio.sleep(0.01)
        assert session.store.closed
        await held.close()  # an inherited session lets go of nothing in the child
        assert not parents.closed

    with sqlite_sessions._shared._lock:  # (held at the fork: the child makes its own)
        in_forked_child(check)
    assert not parents.closed
    await held.add_items([{"n": 3}])
    assert await held.get_items() == [{"n": 1}, {"n": 3}]
    await held.close()
    async with SQLiteSession("child", path) as child_side:
        assert child_side.store is parents, "the parent's idle store, taken over"
        assert await child_side.get_items() == [{"n": 2}]
    assert release_sqlite_files(path) == 1
    assert companions(path) == []
    async with SQLiteSession("parent", path) as fresh:  # nothing was lost
        assert fresh.store is not parents
        assert await fresh.get_items() == [{"n": 1}, {"n": 3}]

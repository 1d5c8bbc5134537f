"""Failures reported as what they are, and recovered from where that is safe.

* a constraint failure that is not a race to create the stream surfaces its cause at
  once (it used to be retried and reported as transient);
* a blocked writer gets a typed ``LockTimeoutError`` after ``lock_timeout``;
* a writer stalled inside a transaction is ended by the server after
  ``idle_in_transaction_timeout``, and the other sessions carry on;
* connections the server kills between calls are replaced without an error;
* a store shared by sessions cannot be closed under them; in-memory sessions cost no
  thread; a read-only SQLite file can be read; new files are private (0600).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import (
    EventStore,
    IntegrityError,
    LockTimeoutError,
    OperationalError,
    StoreInUseError,
    TransientError,
)
from eventstore.backends import open_runner
from projections.history import item_seq
from sessions import SQLiteSession, StoreSession, admin, release_sqlite_files
from sessions.base import HISTORY

from ..conftest import Backend
from ._figures import record
from ._support import sized

REPO = Path(__file__).resolve().parents[2]


def history_store(backend: Backend, **kwargs: Any) -> EventStore:
    return backend.store(projectors=(HISTORY,), **kwargs)


async def admin_engine(backend: Backend) -> Any:
    runner = open_runner(backend.target)
    url = runner.engine.url  # type: ignore[attr-defined]
    await runner.close()
    return create_async_engine(url)


# -- item 2: constraint failures ------------------------------------------------------


async def test_stray_projection_row_surfaces_its_cause(backend: Backend) -> None:
    store = history_store(backend)
    session = StoreSession("s", store)
    await session.add_items([{"n": 1}])  # version 1 SessionStarted, 2 ItemsAdded
    items = HISTORY.items
    await store.run(
        lambda c: c.execute(
            items.insert().values(
                stream_id="s",
                branch_id="main",
                seq=item_seq(3, 0),
                item=b"{}",
                kind="other",
            )
        ),
        write=True,
    )
    with pytest.raises(IntegrityError) as caught:
        await session.add_items([{"n": 2}])
    assert not isinstance(caught.value, TransientError)
    assert "racing" not in str(caught.value)
    # Nothing of the failed add: the log still ends at version 2, and the history holds
    # the first item and the stray row only.
    assert [e.version for e in await store.read_stream("s")] == [1, 2]
    rows = await store.run(
        lambda c: c.execute(select(items.c.seq).where(items.c.stream_id == "s")).scalars().all()
    )
    assert sorted(rows) == [item_seq(2, 0), item_seq(3, 0)]


async def test_deleted_stream_row_surfaces_its_cause(backend: Backend) -> None:
    store = history_store(backend)
    session = StoreSession("s", store)
    await session.add_items([{"n": 1}])
    await store.run(lambda c: c.execute(text("DELETE FROM convstore_streams")), write=True)
    for call in (session.add_items([{"n": 2}]), session.pop_item()):
        with pytest.raises(IntegrityError) as caught:
            await call
        assert not isinstance(caught.value, TransientError)
    assert len(await store.read_all()) == 2


async def test_racing_creators_of_one_stream_all_succeed(shared_backend: Backend) -> None:
    stores = [history_store(shared_backend) for _ in range(6)]
    await asyncio.gather(*(s.ensure_tables() for s in stores))
    await asyncio.gather(
        *(StoreSession("new", s).add_items([{"w": w}]) for w, s in enumerate(stores))
    )
    items = await StoreSession("new", stores[0]).get_items()
    assert sorted(i["w"] for i in items) == list(range(6))


# -- item 1: bounded lock waits ---------------------------------------------------------


class HeldLock:
    """Another connection holding the log's write lock until ``release``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._sqlite: sqlite3.Connection | None = None
        self._conn: Any = None
        self._engine: Any = None

    async def hold(self) -> None:
        if self.backend.name == "sqlite-file":
            self._sqlite = sqlite3.connect(self.backend.target, isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")
            return
        self._engine = await admin_engine(self.backend)
        self._conn = await self._engine.connect()
        await self._conn.begin()
        await self._conn.execute(text("SELECT position FROM convstore_head FOR UPDATE"))

    async def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.rollback()
            self._sqlite.close()
        if self._conn is not None:
            await self._conn.rollback()
            await self._conn.close()
            await self._engine.dispose()


# Counts the transactions of this test's database waiting for a row lock right now.
_WAITING_FOR_A_LOCK = {
    "postgres": "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'",
    "mysql": "SELECT count(*) FROM information_schema.innodb_trx t "
    "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
    "WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()",
}
# SQLite says nothing about a connection waiting in its busy handler: there the
# writer must still be at it after this long (a busy timeout of 0 fails in about 1 ms).
SQLITE_WAIT_SEEN = 0.5


async def until_waiting_for_the_lock(backend: Backend, writer: asyncio.Task[Any]) -> None:
    """Return once ``writer`` is seen waiting for the held lock; fail if it ends first."""
    if backend.name == "sqlite-file":
        done, _ = await asyncio.wait({writer}, timeout=SQLITE_WAIT_SEEN)
    else:
        engine = await admin_engine(backend)
        try:
            done = set()
            for _ in range(3000):  # a minute at most
                async with engine.connect() as conn:
                    waiting = (await conn.execute(text(_WAITING_FOR_A_LOCK[backend.name]))).scalar()
                if waiting:
                    break
                done, _ = await asyncio.wait({writer}, timeout=0.02)
                if done:
                    break
            else:
                pytest.fail("the writer neither waited for the lock nor finished")
        finally:
            await engine.dispose()
    if done:
        outcome = writer.exception() or writer.result()
        pytest.fail(f"the writer did not wait for the held lock: it ended with {outcome!r}")


async def test_blocked_writer_waits_then_gets_a_typed_timeout(shared_backend: Backend) -> None:
    # A writer whose lock_timeout outlasts the holder waits for the lock, then writes.
    patient = StoreSession("s", history_store(shared_backend, lock_timeout=60.0))
    await patient.add_items([{"n": 1}])
    lock = HeldLock(shared_backend)
    await lock.hold()
    try:
        writer = asyncio.create_task(patient.add_items([{"n": 2}]))
        await until_waiting_for_the_lock(shared_backend, writer)
    finally:
        await lock.release()
    await writer  # the lock was released within its lock_timeout: no error
    assert await patient.get_items() == [{"n": 1}, {"n": 2}]
    # One whose lock_timeout runs out while the lock is held gets a typed error.
    store = history_store(shared_backend, lock_timeout=1.0)
    session = StoreSession("s", store)
    await lock.hold()
    try:
        started = time.monotonic()
        with pytest.raises(LockTimeoutError) as caught:
            await session.add_items([{"n": 3}])
        waited = time.monotonic() - started
        assert isinstance(caught.value, TimeoutError)
        with pytest.raises(LockTimeoutError):
            await session.pop_item()
    finally:
        await lock.release()
    record("blocked_writer", backend=shared_backend.name, lock_timeout=1.0, waited=waited)
    await session.add_items([{"n": 4}])
    assert await session.get_items() == [{"n": 1}, {"n": 2}, {"n": 4}]


@pytest.mark.parametrize("timeout", [0, -1, "5", True, 10**6])
def test_bad_timeouts_are_refused(tmp_path: Path, timeout: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        EventStore(str(tmp_path / "x.db"), lock_timeout=timeout)


async def test_stalled_writer_is_ended_and_others_carry_on(shared_backend: Backend) -> None:
    """A client stalled inside an append (SIGSTOP, a GC pause, a partition) holds the log's
    lock; the server ends its connection after the idle limit, and its append is retried."""
    if shared_backend.name == "sqlite-file":
        pytest.skip("SQLite has no server: a stalled writer is bounded by lock_timeout")
    await history_store(shared_backend).ensure_tables()
    attempts: list[float] = []

    def stall_once(conn: Connection) -> int:
        attempts.append(time.monotonic())
        conn.execute(text("SELECT position FROM convstore_head FOR UPDATE"))
        if len(attempts) == 1:
            time.sleep(3.5)  # idle in transaction, holding the lock
        return int(conn.execute(text("SELECT 1")).scalar_one())

    def stalled_client() -> int:
        async def go() -> int:
            async with EventStore(
                shared_backend.target, idle_in_transaction_timeout=1.0
            ) as stalled:
                return await stalled.run(stall_once, write=True)

        return asyncio.run(go())

    stalled = asyncio.create_task(asyncio.to_thread(stalled_client))
    while not attempts:  # noqa: ASYNC110 (the stalled client runs in another thread)
        await asyncio.sleep(0.01)
    other = StoreSession("other", history_store(shared_backend))
    started = time.monotonic()
    await other.add_items([{"n": 1}])  # waits for the stalled holder to be ended
    waited = time.monotonic() - started
    assert await stalled == 1  # its transaction was ended, then retried on a new connection
    assert len(attempts) == 2
    assert await other.get_items() == [{"n": 1}]
    record("stalled_writer", backend=shared_backend.name, idle_limit=1.0, other_waited=waited)


async def test_our_connections_carry_the_limits(shared_backend: Backend) -> None:
    if shared_backend.name == "sqlite-file":
        pytest.skip("server settings")
    store = shared_backend.store(lock_timeout=2.5, idle_in_transaction_timeout=7)
    if shared_backend.name == "postgres":
        sql = (
            "SELECT current_setting('lock_timeout'), "
            "current_setting('idle_in_transaction_session_timeout')"
        )
        expected: tuple[Any, ...] = ("2500ms", "7s")
    else:
        sql = "SELECT @@innodb_lock_wait_timeout, @@idle_transaction_timeout"
        expected = (3, 7)
    row = await store.run(lambda c: tuple(c.execute(text(sql)).one()))
    assert row == expected


async def test_limits_on_an_engine_of_the_users_own(shared_backend: Backend) -> None:
    """The connect_args docs/reliability.md shows for an engine handed to convstore."""
    if shared_backend.name == "sqlite-file":
        pytest.skip("server settings")
    await history_store(shared_backend).ensure_tables()
    runner = open_runner(shared_backend.target)
    url = runner.engine.url  # type: ignore[attr-defined]
    await runner.close()
    if shared_backend.name == "postgres":
        settings = {"lock_timeout": "1s", "idle_in_transaction_session_timeout": "5s"}
        connect_args: dict[str, Any] = {"server_settings": settings}
    else:
        connect_args = {
            "init_command": "SET SESSION innodb_lock_wait_timeout = 1, idle_transaction_timeout = 5"
        }
    engine = create_async_engine(url, connect_args=connect_args)
    store = EventStore(engine, projectors=(HISTORY,))
    session = StoreSession("s", store)
    lock = HeldLock(shared_backend)
    await lock.hold()
    try:
        with pytest.raises(LockTimeoutError):
            await session.add_items([{"n": 1}])
    finally:
        await lock.release()
        await store.close()
        await engine.dispose()


# -- item 4: connections the server ends -----------------------------------------------


async def kill_other_connections(backend: Backend) -> int:
    engine = await admin_engine(backend)
    try:
        async with engine.begin() as conn:
            if backend.name == "postgres":
                result = await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                return len(result.all())
            ids = (
                await conn.execute(
                    text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                    )
                )
            ).scalars()
            killed = 0
            for pid in list(ids):
                await conn.execute(text(f"KILL {int(pid)}"))
                killed += 1
            return killed
    finally:
        await engine.dispose()


async def test_killed_pooled_connections_are_replaced(shared_backend: Backend) -> None:
    if shared_backend.name == "sqlite-file":
        pytest.skip("SQLite has no server to end connections")
    store = history_store(shared_backend)
    sessions = [StoreSession(f"s{i}", store) for i in range(5)]
    calls = 0
    killed = 0
    for round_ in range(3):
        # Several calls at once, so the pool holds several connections; the server then
        # ends all of them before each kind of call.
        await asyncio.gather(*(s.add_items([{"r": round_}]) for s in sessions))
        killed += await kill_other_connections(shared_backend)
        expected = [{"r": r} for r in range(round_ + 1)]
        assert await asyncio.gather(*(s.get_items() for s in sessions)) == [expected] * 5
        killed += await kill_other_connections(shared_backend)
        await asyncio.gather(*(s.add_items([{"after": round_}]) for s in sessions))
        killed += await kill_other_connections(shared_backend)
        popped = await asyncio.gather(*(s.pop_item() for s in sessions))
        assert popped == [{"after": round_}] * 5
        calls += 15
    for s in sessions:
        assert await s.get_items() == [{"r": r} for r in range(3)]
    assert killed >= 9
    record("killed_connections", backend=shared_backend.name, killed=killed, calls=calls)


# -- item 5: shared resources ------------------------------------------------------------


async def test_a_shared_store_cannot_be_closed_from_one_session(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first, second = SQLiteSession("a", path), SQLiteSession("b", path)
    assert first.store is second.store
    with pytest.raises(StoreInUseError) as caught:
        await first.store.close()
    assert isinstance(caught.value, RuntimeError)
    await first.add_items([{"n": 1}])
    await second.add_items([{"n": 2}])
    await first.close()
    assert await second.get_items() == [{"n": 2}]
    await second.close()  # the last holder: the store outlives it, unused, until released
    assert not second.store.closed
    third = SQLiteSession("a", path)
    assert third.store is second.store
    assert await third.get_items() == [{"n": 1}]
    await third.close()
    assert release_sqlite_files(path) == 1
    assert third.store.closed


async def test_in_memory_sessions_cost_no_thread() -> None:
    before = set(threading.enumerate())
    sessions = [SQLiteSession(f"user_{i}") for i in range(sized(200, 1000))]
    for i, session in enumerate(sessions):
        await session.add_items([{"n": i}])
        assert await session.get_items() == [{"n": i}]
    assert set(threading.enumerate()) - before == set()
    for session in sessions:
        await session.close()


async def test_new_database_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        session = SQLiteSession("s", tmp_path / "private.db")
        await session.add_items([{"n": 1}])
        for name in ("private.db", "private.db-wal"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        await session.close()
    finally:
        os.umask(old)


async def read_only_checks(path: Path) -> str:
    """Reads and inspection work on a database we may not write; a write is refused."""
    session = SQLiteSession("s", path)
    assert await session.get_items() == [{"n": 1}, {"n": 2}]
    assert await session.get_items(limit=1) == [{"n": 2}]  # the quick-read connection
    store = admin.open_store(path)
    assert [s.session_id for s in await admin.list_sessions(store)] == ["s"]
    assert len(await admin.session_log(store, "s")) == 3
    assert await admin.session_history(store, "s") == [{"n": 1}, {"n": 2}]
    await store.close()
    with pytest.raises(OperationalError, match=r"readonly|read-only"):
        await session.add_items([{"n": 3}])
    await session.close()
    assert release_sqlite_files(path) == 1  # (the view is unmounted next)
    return "ok"


def read_only_view(source: Path, view: Path) -> Callable[[], None]:
    """Make ``view`` a read-only view of the folder ``source``; return the undo."""
    if os.geteuid() != 0:
        for p in source.iterdir():
            p.chmod(0o444)
        source.chmod(0o555)
        view.rmdir()
        view.symlink_to(source)
        return lambda: source.chmod(0o755)
    # root writes through file modes: only a read-only mount stops it (EROFS)
    mounted = subprocess.run(["mount", "--bind", str(source), str(view)], check=False)
    remounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=False)
    if mounted.returncode or remounted.returncode:
        if not mounted.returncode:
            subprocess.run(["umount", str(view)], check=False)
        pytest.skip("running as root without permission to mount a read-only view")
    return lambda: subprocess.run(["umount", str(view)], check=True) and None


def test_read_only_database_can_be_read(tmp_path: Path) -> None:
    source, view = tmp_path / "data", tmp_path / "view"
    source.mkdir()
    view.mkdir()

    async def write() -> None:
        session = SQLiteSession("s", source / "ro.db")
        await session.add_items([{"n": 1}])
        await session.add_items([{"n": 2}])
        await session.close()
        release_sqlite_files(source / "ro.db")

    asyncio.run(write())
    assert sorted(p.name for p in source.iterdir()) == ["ro.db"]  # WAL checkpointed
    header = (source / "ro.db").read_bytes()[:100]
    undo = read_only_view(source, view)
    try:
        assert asyncio.run(read_only_checks(view / "ro.db")) == "ok"
    finally:
        undo()
    assert (source / "ro.db").read_bytes()[:100] == header  # not even the journal mode
    assert sorted(p.name for p in source.iterdir()) == ["ro.db"]

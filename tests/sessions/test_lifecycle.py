"""Opening and closing sessions: idempotent close, use after close, owned and borrowed
engines, missing tables, bad arguments, and the SDK's Session protocol."""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from agents.memory import Session, SessionSettings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import (
    ConfigurationError,
    EventStore,
    InvalidArgumentError,
    ItemsAdded,
    SchemaError,
    StoreClosedError,
    encode_items,
)
from sessions import SQLAlchemySession, SQLiteSession, StoreSession, release_sqlite_files
from sessions.base import _closing_tasks

from ..conftest import BACKENDS, Backend, make_engine
from .conftest import open_session, sqlalchemy_url

SERVERS = [p for p in BACKENDS if p.id in ("postgres", "mysql")]

CALLS: dict[str, Callable[[StoreSession], Awaitable[Any]]] = {
    "get_items": lambda s: s.get_items(),
    "get_items(limit)": lambda s: s.get_items(limit=1),
    "add_items": lambda s: s.add_items([{"role": "user", "content": "x"}]),
    "add_items([])": lambda s: s.add_items([]),
    "pop_item": lambda s: s.pop_item(),
    "clear_session": lambda s: s.clear_session(),
}


def forget(objects: list[Any]) -> None:
    """Drop the last references to ``objects`` and collect them."""
    objects.clear()
    gc.collect()


def resource_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


# -- close -------------------------------------------------------------------------------


async def test_close_is_idempotent(backend: Backend) -> None:
    session = open_session(backend.name, backend.target, "s")
    await session.add_items([{"n": 1}])
    assert not session.closed
    await session.close()
    assert session.closed
    await session.close()
    assert session.closed


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_use_after_close_raises(
    backend: Backend, call: Callable[[StoreSession], Awaitable[Any]]
) -> None:
    session = open_session(backend.name, backend.target, "s")
    await session.add_items([{"n": 1}])
    await session.close()
    with pytest.raises(StoreClosedError):
        await call(session)


async def test_use_of_a_never_used_closed_session_raises(backend: Backend) -> None:
    session = open_session(backend.name, backend.target, "s")
    await session.close()
    for call in CALLS.values():
        with pytest.raises(StoreClosedError):
            await call(session)


async def test_async_with_closes(backend: Backend) -> None:
    async with open_session(backend.name, backend.target, "s") as session:
        await session.add_items([{"n": 1}])
        assert await session.get_items() == [{"n": 1}]
    assert session.closed
    with pytest.raises(StoreClosedError):
        await session.get_items()


async def test_async_with_closes_on_error(backend: Backend) -> None:
    session = open_session(backend.name, backend.target, "s")

    async def fail_inside() -> None:
        async with session:
            await session.add_items([{"n": 1}])
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await fail_inside()
    assert session.closed


async def test_closing_one_session_leaves_the_others_open(shared_backend: Backend) -> None:
    backend = shared_backend
    first = open_session(backend.name, backend.target, "a")
    second = open_session(backend.name, backend.target, "b")
    try:
        await first.add_items([{"n": 1}])
        await second.add_items([{"n": 2}])
        await first.close()
        assert await second.get_items() == [{"n": 2}]
        await second.add_items([{"n": 3}])
        await second.close()
        async with open_session(backend.name, backend.target, "a") as again:
            assert await again.get_items() == [{"n": 1}]
        async with open_session(backend.name, backend.target, "b") as again:
            assert await again.get_items() == [{"n": 2}, {"n": 3}]
    finally:
        await first.close()
        await second.close()


async def test_sqlite_sessions_on_one_file_share_a_store_until_the_last_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    first = SQLiteSession("a", path)  # a Path works as well as a str
    second = SQLiteSession("b", str(path))
    assert first.store is second.store
    await first.add_items([{"n": 1}])
    await first.close()
    assert not second.store.closed
    assert await second.get_items() == []
    await second.close()
    assert not second.store.closed, "kept for the next session on the file"
    async with SQLiteSession("c", path) as third:
        assert third.store is second.store
    assert release_sqlite_files(path) == 1
    assert second.store.closed, "released: nothing holds it"


# -- :memory: ----------------------------------------------------------------------------


async def test_memory_session_keeps_its_items_for_its_lifetime() -> None:
    async with SQLiteSession("s") as session:
        assert session.db_path == ":memory:"
        for n in range(40):
            await session.add_items([{"n": n}])
            if n % 10 == 9:
                assert len(await session.get_items()) == n + 1
        assert await session.pop_item() == {"n": 39}
        assert await session.get_items() == [{"n": n} for n in range(39)]
        assert await session.get_items(limit=2) == [{"n": 37}, {"n": 38}]


async def test_memory_sessions_are_private() -> None:
    async with SQLiteSession("s") as first, SQLiteSession("s", ":memory:") as second:
        await first.add_items([{"n": 1}])
        assert await second.get_items() == []
        assert first.store is not second.store


# -- engines: owned and borrowed ----------------------------------------------------------


async def test_leaked_url_session_warns_naming_the_session(backend: Backend) -> None:
    session = SQLAlchemySession("leaky", db_url=sqlalchemy_url(backend), create_tables=True)
    await session.add_items([{"n": 1}])
    held = [session]
    del session
    with pytest.warns(ResourceWarning) as record:
        forget(held)
    messages = resource_warnings(list(record))
    assert messages == [
        "SQLAlchemySession(session_id='leaky', branch='main') was never closed: "
        "call session.close() or use 'async with'"
    ], "one warning, naming the session and not the store behind it"
    # Collected inside a running loop, the session closes itself at the loop's next
    # turn: nothing stays open.
    await asyncio.sleep(0)
    await asyncio.gather(*list(_closing_tasks))


@pytest.mark.parametrize("path", [":memory:", "file.db"])
async def test_leaked_sqlite_session_warns(tmp_path: Path, path: str) -> None:
    session = SQLiteSession("leaky", path if path == ":memory:" else tmp_path / path)
    await session.add_items([{"n": 1}])
    store = session.store
    held = [session]
    del session
    with pytest.warns(ResourceWarning, match=r"SQLiteSession\(session_id='leaky'"):
        forget(held)
    await asyncio.sleep(0)
    await asyncio.gather(*list(_closing_tasks))
    release_sqlite_files()  # (a file's store is kept for the next session until then)
    assert store.closed


async def test_session_on_a_borrowed_engine_does_not_warn(backend: Backend) -> None:
    engine = await make_engine(backend)
    try:
        session = SQLAlchemySession("s", engine=engine, create_tables=True)
        await session.add_items([{"n": 1}])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del session
            gc.collect()
        assert resource_warnings(caught) == [], "the SDK's class has no close(): nothing leaks"
    finally:
        await engine.dispose()


async def test_closed_url_session_does_not_warn(backend: Backend) -> None:
    session = SQLAlchemySession("s", db_url=sqlalchemy_url(backend), create_tables=True)
    await session.add_items([{"n": 1}])
    await session.close()
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del session
        gc.collect()
    assert resource_warnings(caught) == []


async def test_missing_tables_raise_schema_error(backend: Backend) -> None:
    url = sqlalchemy_url(backend)
    async with SQLAlchemySession("s", db_url=url) as session:  # create_tables=False
        with pytest.raises(SchemaError):
            await session.get_items()
        with pytest.raises(SchemaError):
            await session.add_items([{"n": 1}])
    if backend.name != "sqlite-memory":  # a new private database each time otherwise
        async with SQLAlchemySession("s", db_url=url, create_tables=True) as session:
            assert await session.get_items() == []


async def test_borrowed_engine_is_not_disposed(backend: Backend) -> None:
    engine = await make_engine(backend)
    try:
        session = SQLAlchemySession("s", engine=engine, create_tables=True)
        assert session.engine is engine
        await session.add_items([{"n": 1}])
        await session.close()
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        async with SQLAlchemySession("s", engine=engine) as again:
            assert await again.get_items() == [{"n": 1}]
    finally:
        await engine.dispose()


async def test_engine_and_url_are_exclusive() -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        with pytest.raises(ConfigurationError):
            SQLAlchemySession("s", engine=engine, db_url="sqlite://")
        with pytest.raises(ConfigurationError):
            SQLAlchemySession("s")
        with pytest.raises(ConfigurationError):
            SQLAlchemySession("s", engine=engine.sync_engine)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


async def test_from_url(backend: Backend) -> None:
    url = sqlalchemy_url(backend)
    session = SQLAlchemySession.from_url(
        "s", url=url, create_tables=True, session_settings=SessionSettings(limit=1)
    )
    async with session:
        assert isinstance(session, SQLAlchemySession)
        await session.add_items([{"n": 1}, {"n": 2}])
        assert await session.get_items() == [{"n": 2}]
        assert await session.get_items(limit=5) == [{"n": 1}, {"n": 2}]
    if backend.name != "sqlite-memory":
        async with SQLAlchemySession.from_url("s", url=url) as again:
            assert await again.get_items() == [{"n": 1}, {"n": 2}]


# -- refused arguments ---------------------------------------------------------------------

BAD_ARGUMENTS = [
    pytest.param({"session_id": ""}, InvalidArgumentError, id="empty-id"),
    pytest.param({"session_id": "x" * 256}, InvalidArgumentError, id="long-id"),
    pytest.param({"session_id": 7}, InvalidArgumentError, id="int-id"),
    pytest.param({"session_settings": {"bogus": 1}}, InvalidArgumentError, id="bad-settings"),
    pytest.param({"session_settings": {"limit": -1}}, InvalidArgumentError, id="bad-limit"),
]
LEAK_CASES = [BAD_ARGUMENTS[0], BAD_ARGUMENTS[-1]]


@pytest.mark.parametrize(("kwargs", "error"), BAD_ARGUMENTS)
async def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    args = {"session_id": "s", **kwargs}
    with pytest.raises(error):
        SQLiteSession(**args)
    with pytest.raises(error):
        SQLAlchemySession(db_url="sqlite://", **args)


@pytest.mark.parametrize(("kwargs", "error"), LEAK_CASES)
async def test_refused_sqlite_session_holds_no_store(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    path = tmp_path / "c.db"
    with pytest.raises(error):
        SQLiteSession(db_path=path, **{"session_id": "s", **kwargs})
    session = SQLiteSession("s", path)
    await session.add_items([{"n": 1}])
    await session.close()
    release_sqlite_files(path)  # closes the store unless a holder is left
    assert session.store.closed, "the last session on the file must let go of its store"


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
@pytest.mark.parametrize(("kwargs", "error"), LEAK_CASES)
async def test_refused_url_session_leaks_no_engine(
    backend: Backend, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(error):
            SQLAlchemySession(db_url=backend.target, **{"session_id": "s", **kwargs})
        gc.collect()
    assert resource_warnings(caught) == []


# -- the SDK's protocol ----------------------------------------------------------------------


async def test_both_classes_are_sdk_sessions(tmp_path: Path) -> None:
    assert getattr(Session, "_is_runtime_protocol", False), "Session is runtime_checkable"
    async with (
        SQLiteSession("s") as memory,
        SQLiteSession("s", tmp_path / "f.db") as file,
        SQLAlchemySession("s", db_url="sqlite://", create_tables=True) as alchemy,
    ):
        for session in (memory, file, alchemy):
            assert isinstance(session, Session)
            assert session.session_id == "s"
            assert session.session_settings == SessionSettings()
            for name in ("get_items", "add_items", "pop_item", "clear_session"):
                method = getattr(session, name)
                assert inspect.iscoroutinefunction(method), name
                assert "wrapper" in inspect.signature(method).parameters, name
            limit = inspect.signature(session.get_items).parameters["limit"]
            assert limit.default is None


async def test_backend_sessions_are_sdk_sessions(session: StoreSession) -> None:
    assert isinstance(session, Session)
    assert type(session).__name__ in repr(session)


async def test_a_collected_sqlite_store_never_deadlocks_the_collector(tmp_path: Path) -> None:
    """The garbage collector may release a leaked store inside another store's
    ``executor.submit``, which holds concurrent.futures' global lock: its clean-up must
    not need that lock (it once did, and the whole process hung)."""
    import concurrent.futures.thread as cf_thread
    import threading

    store = EventStore(tmp_path / "leak.db")
    await store.append("s", [ItemsAdded(items=encode_items([{"n": 1}]))])
    finalize = store._runner._finalizer  # type: ignore[attr-defined]
    finished = threading.Event()

    def collect_inside_submit() -> None:
        with cf_thread._global_shutdown_lock:  # type: ignore[attr-defined]
            finalize()  # what the collector runs for an unreachable runner
        finished.set()

    helper = threading.Thread(target=collect_inside_submit, daemon=True)
    helper.start()
    helper.join(timeout=30)
    assert finished.is_set(), "the finalizer waited for a lock its own thread holds"
    await store.close()


async def test_a_session_collected_while_the_registry_is_locked_does_not_deadlock(
    tmp_path: Path,
) -> None:
    """The collector can find a leaked session while this very thread holds the lock of
    the per-file store registry (it once did, inside ``SQLiteSession()``): closing must
    not need that lock there and then."""
    import threading

    from sessions import sqlite as sqlite_sessions

    path = tmp_path / "r.db"
    in_loop = SQLiteSession("a", path)
    outside = SQLiteSession("b", path)
    await in_loop.add_items([{"n": 1}])
    store = in_loop.store
    held: list[Any] = [in_loop]
    del in_loop
    with sqlite_sessions._shared._lock, pytest.warns(ResourceWarning):
        forget(held)  # in the loop's thread: closes at the loop's next turn
    await asyncio.sleep(0)
    await asyncio.gather(*list(_closing_tasks))

    held = [outside]
    del outside
    finished = threading.Event()

    def collect_without_a_loop() -> None:
        with sqlite_sessions._shared._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            forget(held)  # no loop in this thread: handed over, released later
        finished.set()

    helper = threading.Thread(target=collect_without_a_loop, daemon=True)
    helper.start()
    helper.join(timeout=30)
    assert finished.is_set(), "the collector waited for a lock its own thread held"
    async with SQLiteSession("c", path) as again:  # releases what was handed over
        assert await again.get_items() == []
    release_sqlite_files(path)
    assert store.closed or not sqlite_sessions._shared._stores

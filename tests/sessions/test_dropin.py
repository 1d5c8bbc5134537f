"""SDK call forms that users' code already has keep working (drop-in fidelity).

Plain ``session.close()``, the builtin exception classes the SDK raises, an engine on
every ``SQLAlchemySession``, refused non-URLs and SDK-only keywords, and keeping two
applications' tables apart in one database server.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path
from typing import Any

import pytest
from agents.memory import SQLiteSession as SDKSQLiteSession
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventstore import ArgumentTypeError, ConfigurationError, InvalidArgumentError
from eventstore.backends import open_runner
from sessions import SQLAlchemySession, SQLiteSession, release_sqlite_files
from sessions.base import _closing_tasks

from ..conftest import Backend
from .conftest import open_session, sqlalchemy_url

# -- close() without await ---------------------------------------------------------------


async def test_plain_close_inside_a_loop_closes(backend: Backend) -> None:
    session = open_session(backend.name, backend.target, "s")
    await session.add_items([{"n": 1}])
    store = session.store
    session.close()  # as with the SDK's synchronous close(): no await
    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await session.get_items()
    await asyncio.gather(*list(_closing_tasks))
    release_sqlite_files()  # a file's store is kept for the next session until released
    assert store.closed, "the connections are released without anyone awaiting"
    gc.collect()  # a never-awaited coroutine would warn here (warnings are errors)


async def test_plain_close_then_await_and_async_with(backend: Backend) -> None:
    session = open_session(backend.name, backend.target, "s")
    await session.add_items([{"n": 1}])
    session.close()
    await session.close()  # awaiting after a plain call waits for the same closing
    release_sqlite_files()
    assert session.store.closed
    async with open_session(backend.name, backend.target, "t") as again:
        await again.add_items([{"n": 2}])
    assert again.closed
    release_sqlite_files()
    assert again.store.closed


@pytest.mark.parametrize("where", [":memory:", "file"])
def test_plain_close_outside_a_loop_closes(tmp_path: Path, where: str) -> None:
    path = ":memory:" if where == ":memory:" else str(tmp_path / "c.db")
    session = SQLiteSession("s", path)
    asyncio.run(session.add_items([{"n": 1}]))
    session.close()  # no loop runs here: the closing finishes before it returns
    assert session.closed
    assert release_sqlite_files() == (where == "file")  # it had let go of the file's store
    assert session.store.closed
    if where == "file":
        again = SQLiteSession("s", path)
        assert asyncio.run(again.get_items()) == [{"n": 1}]
        again.close()
        assert release_sqlite_files() == 1
        assert again.store.closed


# -- the builtin exception classes the SDK raises ------------------------------------------

SETTINGS_CASES = [
    pytest.param({"bogus": 1}, TypeError, id="unknown-key"),
    pytest.param(5, TypeError, id="not-a-dict"),
    pytest.param({"limit": "many"}, ValueError, id="bad-value"),
]


@pytest.mark.parametrize(("settings", "builtin"), SETTINGS_CASES)
def test_bad_settings_raise_what_the_sdk_raises(settings: Any, builtin: type[Exception]) -> None:
    with pytest.raises(builtin):
        SDKSQLiteSession("s", session_settings=settings)
    with pytest.raises(builtin) as ours:
        SQLiteSession("s", session_settings=settings)
    assert isinstance(ours.value, InvalidArgumentError)
    with pytest.raises(builtin):
        SQLAlchemySession("s", db_url="sqlite://", session_settings=settings)


async def test_closed_session_raises_runtime_error_like_the_sdk() -> None:
    sdk = SDKSQLiteSession("s")
    sdk.close()
    with pytest.raises(RuntimeError):
        await sdk.get_items()
    ours = SQLiteSession("s")
    ours.close()
    for call in (ours.get_items(), ours.add_items([{"n": 1}]), ours.pop_item()):
        with pytest.raises(RuntimeError):
            await call


# -- SQLAlchemySession.engine ----------------------------------------------------------------


async def test_engine_is_an_async_engine_on_the_same_database(backend: Backend) -> None:
    session = SQLAlchemySession("s", db_url=sqlalchemy_url(backend), create_tables=True)
    await session.add_items([{"n": 1}, {"n": 2}])
    engine = session.engine
    assert isinstance(engine, AsyncEngine)
    assert session.engine is engine
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM convstore_items WHERE stream_id = 's'")
        )
    assert count == 2, "the engine reaches the very database the session writes"
    await engine.dispose()  # the user may dispose it; the session keeps working
    await session.add_items([{"n": 3}])
    assert len(await session.get_items()) == 3
    await session.close()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"]
)
async def test_in_memory_sqlite_url_has_an_engine(url: str) -> None:
    async with SQLAlchemySession("s", db_url=url, create_tables=True) as session:
        await session.add_items([{"n": 1}])
        async with session.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT stream_id FROM convstore_items"))).all()
        assert rows == [("s",)]


# -- what is not a URL, and SDK keywords we do not take ------------------------------------


async def test_not_a_url_is_refused_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"not a database URL.*SQLiteSession"):
        SQLAlchemySession.from_url("s", url="notaurl")
    with pytest.raises(ValueError, match="not a database URL"):
        SQLAlchemySession("s", db_url="notaurl", create_tables=True)
    with pytest.raises(ConfigurationError, match=r"not a URL.*SQLAlchemySession"):
        SQLiteSession("s", "postgresql://user@host/db")
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 (a test, one directory listing)


@pytest.mark.parametrize("keyword", ["sessions_table", "messages_table"])
def test_table_name_keywords_name_the_alternative(keyword: str) -> None:
    with pytest.raises(TypeError, match="search_path") as refused:
        SQLiteSession("s", **{keyword: "my_table"})
    assert isinstance(refused.value, ArgumentTypeError)
    with pytest.raises(TypeError, match="own SQLite file"):
        SQLAlchemySession("s", db_url="sqlite://", **{keyword: "my_table"})
    with pytest.raises(TypeError, match="schema"):
        SQLAlchemySession.from_url("s", url="sqlite://", **{keyword: "my_table"})


def test_ensure_ascii_and_unknown_keywords_are_type_errors() -> None:
    with pytest.raises(TypeError, match="exact UTF-8 JSON"):
        SQLAlchemySession("s", db_url="sqlite://", ensure_ascii=True)  # False: what we do
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        SQLiteSession("s", bogus=1)


# -- two applications, one database server ---------------------------------------------------


async def test_two_applications_keep_their_tables_apart(
    shared_backend: Backend, tmp_path: Path
) -> None:
    """A PostgreSQL schema each (search_path), a MariaDB database each, a SQLite file each."""
    backend = shared_backend
    names = [f"app_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin: AsyncEngine | None = None
    if backend.name == "sqlite-file":
        targets = [(f"sqlite:///{tmp_path / name}.db", None) for name in names]
    else:
        runner = open_runner(backend.target)
        url = runner.engine.url
        await runner.close()
        admin = create_async_engine(url)
        word = "SCHEMA" if backend.name == "postgres" else "DATABASE"
        async with admin.begin() as conn:
            for name in names:
                await conn.execute(text(f"CREATE {word} {name}"))
        if backend.name == "postgres":
            targets = [
                (
                    url.render_as_string(hide_password=False),
                    {"connect_args": {"server_settings": {"search_path": name}}},
                )
                for name in names
            ]
        else:
            targets = [(url.set(database=name).render_as_string(False), None) for name in names]
    try:
        for n, (target, kwargs) in enumerate(targets):
            async with SQLAlchemySession(
                "user_1", db_url=target, engine_kwargs=kwargs, create_tables=True
            ) as session:
                await session.add_items([{"app": n}])
        for n, (target, kwargs) in enumerate(targets):
            async with SQLAlchemySession("user_1", db_url=target, engine_kwargs=kwargs) as s:
                assert await s.get_items() == [{"app": n}]
        if admin is not None and backend.name == "postgres":
            async with admin.connect() as conn:
                public = await conn.scalar(
                    text("SELECT count(*) FROM pg_tables WHERE tablename = 'convstore_events'")
                )
            assert public == 2, "one log per schema"
    finally:
        if admin is not None:
            async with admin.begin() as conn:
                for name in names:
                    drop = (
                        f"DROP SCHEMA {name} CASCADE"
                        if backend.name == "postgres"
                        else (f"DROP DATABASE {name}")
                    )
                    await conn.execute(text(drop))
            await admin.dispose()


async def test_a_non_json_item_is_a_type_error_like_the_sdk(tmp_path: Path) -> None:
    item: Any = {"role": "user", "content": object()}
    sdk = SDKSQLiteSession("s", tmp_path / "sdk.db")
    with pytest.raises(TypeError):
        await sdk.add_items([item])
    sdk.close()
    async with SQLiteSession("s", tmp_path / "ours.db") as ours:
        with pytest.raises(TypeError) as refused:
            await ours.add_items([item])
        assert isinstance(refused.value, ValueError), "and still the ValueError it was"
        assert await ours.get_items() == []


async def test_closed_message_uses_the_sdks_words() -> None:
    session = SQLiteSession("s")
    session.close()
    with pytest.raises(RuntimeError, match="SQLiteSession is closed"):
        await session.add_items([])

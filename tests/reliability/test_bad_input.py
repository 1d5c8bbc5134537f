"""Every bad input of issue 12 gets a typed error, on every backend, and writes nothing.

Each error is ours (``ConvstoreError``) and also the builtin the SDK raises for the
same mistake (``TypeError`` for a wrong type, ``ValueError`` for a wrong value), so
``except TypeError:`` code keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eventstore import (
    ArgumentTypeError,
    ConvstoreError,
    EventStore,
    InvalidArgumentError,
    OperationalError,
    SerializationError,
)
from eventstore.store import MAX_INTEGER
from sessions import SQLAlchemySession, SQLiteSession, StoreSession
from sessions.base import HISTORY

from ..conftest import BACKENDS, Backend
from ..sessions.conftest import open_session


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):  # ``depth`` lists around a string
        value = [value]
    return value


NOT_A_LIST = {
    "str": "hello",
    "dict": {"role": "user", "content": "hi"},
    "bytes": b"hello",
    "None": None,
    "int": 123,
    "set": {1, 2},
    "generator": (x for x in [{"n": 1}]),
}
NOT_STORABLE = {
    "10,000 levels": [nested(10_000)],
    "257 levels": [nested(257)],
    "deep after a good item": [{"ok": 1}, {"deep": nested(1_000)}],
    "NaN": [{"x": float("nan")}],
    "non-string key": [{1: "x"}],
}
BAD_LIMITS = {"2**63": 2**63, "10**30": 10**30, "-1": -1}
BAD_IDS = {"NUL": "a\x00b", "lone surrogate": "user\ud800", "empty": "", "256 chars": "x" * 256}


@pytest.fixture
async def session(backend: Backend) -> Any:
    opened = open_session(backend.name, backend.target, "s")
    yield opened
    await opened.close()


async def assert_nothing_written(session: StoreSession) -> None:
    assert await session.get_items() == []
    assert await session.store.read_all() == []


@pytest.mark.parametrize("name", NOT_A_LIST)
async def test_add_items_needs_a_list(session: StoreSession, name: str) -> None:
    with pytest.raises(ArgumentTypeError, match="must be a list") as caught:
        await session.add_items(NOT_A_LIST[name])
    assert isinstance(caught.value, TypeError)
    await assert_nothing_written(session)


@pytest.mark.parametrize("name", NOT_STORABLE)
async def test_items_that_cannot_be_stored(session: StoreSession, name: str) -> None:
    with pytest.raises(SerializationError) as caught:
        await session.add_items(NOT_STORABLE[name])
    assert isinstance(caught.value, ValueError)
    await assert_nothing_written(session)


async def test_deepest_item_accepted_round_trips(session: StoreSession) -> None:
    await session.add_items([nested(256)])
    assert await session.get_items() == [nested(256)]


@pytest.mark.parametrize("name", BAD_LIMITS)
async def test_limits_beyond_the_one_bound(session: StoreSession, name: str) -> None:
    await session.add_items([{"n": 1}])
    with pytest.raises(InvalidArgumentError, match="2\\*\\*63 - 1") as caught:
        await session.get_items(limit=BAD_LIMITS[name])
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidArgumentError):
        await session.store.read_stream("s", limit=BAD_LIMITS[name])
    assert await session.get_items(limit=MAX_INTEGER) == [{"n": 1}]
    assert len(await session.store.read_all(after_position=0, limit=MAX_INTEGER)) == 2


@pytest.mark.parametrize("name", BAD_IDS)
async def test_session_ids_refused_up_front(backend: Backend, name: str) -> None:
    bad = BAD_IDS[name]
    with pytest.raises(InvalidArgumentError) as caught:
        open_session(backend.name, backend.target, bad)  # before any database work
    assert isinstance(caught.value, ValueError)
    store = backend.store()
    with pytest.raises(InvalidArgumentError):
        await store.stream_info(bad)
    assert await store.read_all() == []


async def test_unusual_but_valid_ids_are_kept(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    ids = ["user", "User", "user ", "é", "e\u0301", "ß", "\U0001d518", "\u200f", "x" * 255]
    for sid in ids:
        session = StoreSession(sid, store)
        await session.add_items([{"id": sid}])
    for sid in ids:
        assert await StoreSession(sid, store).get_items() == [{"id": sid}]


@pytest.mark.parametrize("db_path", [None, 123, b"bytes.db", "", "a\x00b"])
def test_bad_db_path(db_path: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConvstoreError) as caught:
        SQLiteSession("s", db_path)
    assert isinstance(caught.value, TypeError | ValueError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend_id", [p.id for p in BACKENDS])
@pytest.mark.parametrize(
    "engine_kwargs", [{"no_such_option": 1}, "pool_size=5", [("echo", True)]], ids=str
)
def test_bad_engine_kwargs(backend_id: str, engine_kwargs: Any) -> None:
    url = {
        "sqlite-memory": "sqlite://",
        "sqlite-file": "sqlite:///never.db",
        "postgres": "postgresql://postgres@127.0.0.1:5432/never",
        "mysql": "mysql://root@127.0.0.1:3306/never",
    }[backend_id]
    if isinstance(engine_kwargs, dict) and backend_id.startswith("sqlite"):
        pytest.skip("SQLite runs on convstore's own connection: no engine to configure")
    with pytest.raises(ArgumentTypeError, match="engine_kwargs") as caught:
        SQLAlchemySession.from_url("s", url=url, engine_kwargs=engine_kwargs)
    assert isinstance(caught.value, TypeError)


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1:1/test", "mysql://root@127.0.0.1:1/test"],
    ids=["postgres", "mysql"],
)
async def test_connection_refused_is_typed(url: str) -> None:
    store = EventStore(url)
    try:
        with pytest.raises(OperationalError, match="connect") as caught:
            await store.list_streams()
        assert not isinstance(caught.value, ConnectionRefusedError)
    finally:
        await store.close()


@pytest.mark.mysql
async def test_item_over_the_packet_limit_names_it(backend: Backend) -> None:
    if backend.name != "mysql":
        pytest.skip("max_allowed_packet is MariaDB's limit (see docs/reliability.md)")
    store = backend.store(projectors=(HISTORY,))
    session = StoreSession("s", store)
    await session.add_items([{"n": 1}])
    limit = int(
        await store.run(lambda c: c.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    )
    big = {"content": '"' * (limit // 2)}  # small as Python, twice as large escaped
    with pytest.raises(SerializationError, match="max_allowed_packet") as caught:
        await session.add_items([big])
    assert f"{limit - 4096:,}" in str(caught.value)
    assert await session.get_items() == [{"n": 1}]
    assert len(await store.read_all()) == 2  # SessionStarted + the first add

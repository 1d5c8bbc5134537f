"""Every bad input gets a typed error, on every backend, and writes nothing.

Each error is ours (``ConvstoreError``) and also the builtin the SDK raises for the
same mistake (``TypeError`` for a wrong type, ``ValueError`` for a wrong value), so
``except TypeError:`` code keeps working.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from eventstore import (
    MAX_INTEGER,
    ArgumentTypeError,
    BranchError,
    ConfigurationError,
    ConnectionLostError,
    ConvstoreError,
    EventStore,
    IntegrityError,
    InvalidArgumentError,
    OperationalError,
    ProjectionMismatchError,
    SerializationError,
)
from sessions import (
    AdvancedSQLAlchemySession,
    AdvancedSQLiteSession,
    EncryptedSession,
    SQLAlchemySession,
    SQLiteSession,
    StoreSession,
    UsageSession,
)
from sessions.admin import replay
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


# -- a projection row changed by hand --------------------------------------------------------

READS: dict[str, Callable[[UsageSession], Awaitable[Any]]] = {
    "get_items()": lambda s: s.get_items(),
    "get_items(limit=1)": lambda s: s.get_items(limit=1),
    "get_items(turns=1)": lambda s: s.get_items(turns=1),
    "pop_item()": lambda s: s.pop_item(),
    "get_conversation_turns()": lambda s: s.get_conversation_turns(),
    "find_turns_by_content()": lambda s: s.find_turns_by_content("again"),
}


def open_advanced(backend: Backend, session_id: str = "s") -> UsageSession:
    if backend.name.startswith("sqlite"):
        return AdvancedSQLiteSession(session_id=session_id, db_path=backend.target)
    return AdvancedSQLAlchemySession(session_id, db_url=backend.target, create_tables=True)


def shorten_newest_row(conn: Connection) -> None:
    """What a hand edit of ``convstore_items`` does: the newest item's row of session
    "s" points at two bytes fewer than the item."""
    newest = conn.execute(
        text("SELECT max(seq) FROM convstore_items WHERE stream_id = 's'")
    ).scalar_one()
    conn.execute(
        text(
            "UPDATE convstore_items SET item_size = item_size - 2 "
            "WHERE stream_id = 's' AND seq = :seq"
        ),
        {"seq": newest},
    )


@pytest.mark.parametrize("read", READS)
async def test_a_projection_row_changed_by_hand_is_named(backend: Backend, read: str) -> None:
    """A read that meets a history row that does not match its event raises
    ProjectionMismatchError naming the session, the event's version and the command
    that rebuilds the projection; a pop removes nothing. The replay then repairs it."""
    session = open_advanced(backend)
    try:
        await session.add_items([{"role": "user", "content": "hello"}])
        await session.add_items([{"role": "user", "content": "again"}])
        newest = (await session.store.read_stream("s"))[-1].version
        await session.store.run(shorten_newest_row, write=True)
        log = await session.store.read_all()
        with pytest.raises(ProjectionMismatchError) as caught:
            await READS[read](session)
        message = str(caught.value)
        assert "session 's'" in message
        assert f"version {newest}" in message
        assert "convstore DB replay" in message
        assert caught.value.version == newest
        assert isinstance(caught.value, IntegrityError)
        assert await session.store.read_all() == log, "nothing written"
        await replay(session.store)
        assert await session.get_items() == [
            {"role": "user", "content": "hello"},
            {"role": "user", "content": "again"},
        ]
    finally:
        await session.close()


# -- branch names and ids follow the rules of session ids ---------------------------------------


@pytest.mark.parametrize("name", BAD_IDS)
async def test_bad_branch_names_are_refused_and_write_nothing(backend: Backend, name: str) -> None:
    bad = BAD_IDS[name]
    session = open_advanced(backend)
    try:
        await session.add_items(
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        )
        log = await session.store.read_all()
        if bad:  # (an empty name is the SDK's "Branch name cannot be empty")
            with pytest.raises(BranchError, match="a branch name") as caught:
                await session.create_branch_from_turn(2, bad)
            assert isinstance(caught.value, ValueError)
            fix = {"NUL": "remove it", "lone surrogate": "decode them as UTF-8"}
            fix["256 chars"] = "use a shorter one"
            assert fix[name] in str(caught.value)
        for call in (
            lambda: session.switch_to_branch(bad),
            lambda: session.delete_branch(bad),
            lambda: session.get_items(branch_id=bad),
        ):
            with pytest.raises(BranchError):
                await call()
        assert await session.store.read_all() == log, "nothing written"
        assert [b["branch_id"] for b in await session.list_branches()] == ["main"]
    finally:
        await session.close()


async def test_switch_to_branch_none_is_refused(backend: Backend) -> None:
    """Not a switch to the current branch: the SDK finds no branch None either."""
    session = open_advanced(backend)
    try:
        await session.add_items([{"role": "user", "content": "a"}])
        log = await session.store.read_all()
        with pytest.raises(BranchError, match="list_branches") as caught:
            await session.switch_to_branch(None)  # type: ignore[arg-type]
        assert isinstance(caught.value, ValueError)
        assert await session.store.read_all() == log, "nothing written"
    finally:
        await session.close()


async def test_as_of_a_naive_datetime_names_the_timezone(backend: Backend) -> None:
    session = open_advanced(backend)
    try:
        await session.add_items([{"role": "user", "content": "a"}])
        log = await session.store.read_all()
        with pytest.raises(InvalidArgumentError, match=r"tzinfo=timezone\.utc") as caught:
            await session.get_items(as_of=datetime(2020, 1, 1))
        assert isinstance(caught.value, ValueError)
        assert await session.get_items(as_of=datetime(2020, 1, 1, tzinfo=UTC)) == []
        assert await session.store.read_all() == log, "nothing written"
    finally:
        await session.close()


# -- constructor arguments, refused before anything is opened ---------------------------------


@pytest.mark.parametrize("projectors", ["x", b"x", {"history": 1}, 3, [object()], ["history"]])
def test_projectors_must_be_projectors(projectors: Any, tmp_path: Path) -> None:
    path = tmp_path / "never.db"
    with pytest.raises(ArgumentTypeError, match="projector") as caught:
        EventStore(path, projectors=projectors)
    assert isinstance(caught.value, TypeError)
    assert "HistoryProjector()" in str(caught.value) or "eventstore.Projector" in str(caught.value)
    assert list(tmp_path.iterdir()) == [], "nothing created"


YES: Any = "yes"  # not a bool (typed Any: the mistake is the point)
CREATE_TABLES: dict[str, Callable[[str], Any]] = {
    "EventStore": lambda db: EventStore(db, create_tables=YES),
    "SQLAlchemySession": lambda db: SQLAlchemySession(
        "s", db_url=f"sqlite:///{db}", create_tables=YES
    ),
    "SQLAlchemySession.from_url": lambda db: SQLAlchemySession.from_url(
        "s", url=f"sqlite:///{db}", create_tables=YES
    ),
    "AdvancedSQLiteSession": lambda db: AdvancedSQLiteSession(
        session_id="s", db_path=db, create_tables=YES
    ),
    "AdvancedSQLAlchemySession": lambda db: AdvancedSQLAlchemySession(
        "s", db_url=f"sqlite:///{db}", create_tables=YES
    ),
}


@pytest.mark.parametrize("opener", CREATE_TABLES)
def test_create_tables_takes_only_a_bool(opener: str, tmp_path: Path) -> None:
    with pytest.raises(ArgumentTypeError, match="create_tables must be True or False") as caught:
        CREATE_TABLES[opener](str(tmp_path / "never.db"))
    assert isinstance(caught.value, TypeError)
    assert list(tmp_path.iterdir()) == [], "nothing created"


async def test_encrypted_clock_is_checked_at_construction(tmp_path: Path) -> None:
    async with SQLiteSession("s", tmp_path / "db.sqlite") as base:
        with pytest.raises(ArgumentTypeError, match=r"like time\.time") as caught:
            EncryptedSession(session=base, encryption_key="k" * 32, clock="x")  # type: ignore[arg-type]
        assert isinstance(caught.value, TypeError)
        assert await base.store.read_all() == [], "nothing written"


MISSING_DIRECTORY: dict[str, Callable[[Path], Any]] = {
    "SQLiteSession": lambda path: SQLiteSession("c1", path),
    "SQLiteSession(str)": lambda path: SQLiteSession("c1", str(path)),
    "AdvancedSQLiteSession": lambda path: AdvancedSQLiteSession(session_id="c1", db_path=path),
    "SQLAlchemySession": lambda path: SQLAlchemySession("c1", db_url=f"sqlite:///{path}"),
    "EventStore": lambda path: EventStore(path),
}


@pytest.mark.parametrize("opener", MISSING_DIRECTORY)
def test_a_sqlite_file_in_a_missing_directory_is_a_configuration_error(
    opener: str, tmp_path: Path
) -> None:
    """Not a lost connection: the path cannot work, and the error says what to do."""
    path = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(ConfigurationError) as caught:
        MISSING_DIRECTORY[opener](path)
    assert isinstance(caught.value, ValueError)
    assert not isinstance(caught.value, ConnectionLostError)
    message = str(caught.value)
    assert str(path.parent) in message
    assert "create the directory" in message
    assert list(tmp_path.iterdir()) == [], "nothing created"


# -- a module of the user's shadowing one of convstore's packages -----------------------------

SHADOWING = {
    "eventstore.py, agents.sessions": ("eventstore", "from agents.sessions import SQLiteSession"),
    "eventstore.py, sessions": ("eventstore", "from sessions import SQLiteSession"),
    "projections.py, agents.sessions": ("projections", "from agents.sessions import SQLiteSession"),
}


@pytest.mark.parametrize("case", SHADOWING)
def test_a_shadowing_module_is_named_with_the_fix(case: str, tmp_path: Path) -> None:
    """A user's own ``eventstore.py`` next to their script is imported instead of
    convstore's package: the ImportError names that file, says why, and what to do."""
    name, statement = SHADOWING[case]
    shadow = tmp_path / f"{name}.py"
    shadow.write_text("ANSWER = 42\n")
    script = tmp_path / "app.py"
    script.write_text(f"{statement}\nprint('imported')\n")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "imported" not in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: "), done.stderr
    assert str(shadow) in last
    assert "shadows convstore's" in last
    assert f"Rename {shadow}" in last


def test_every_error_class_is_exported_from_sessions_too() -> None:
    """Users import from ``sessions`` (``agents.sessions``): the errors are there too,
    the same classes as in ``eventstore`` (whose ``__all__`` keeps them)."""
    import agents.sessions

    import eventstore
    import sessions

    errors = [
        name
        for name in eventstore.__all__
        if isinstance(getattr(eventstore, name), type)
        and issubclass(getattr(eventstore, name), BaseException)
    ]
    assert "CancelledAfterCommit" in errors
    assert "ProjectionMismatchError" in errors
    for name in errors:
        assert name in sessions.__all__, name
        assert getattr(sessions, name) is getattr(eventstore, name), name
        assert getattr(agents.sessions, name) is getattr(eventstore, name), name

"""Every keyword of the SDK's session constructors is honoured, or refused with a reason.

The SDK's classes are inspected, so a keyword a new SDK release adds fails
``test_every_sdk_keyword_is_decided`` until it is decided here (and in the table of
docs/sessions.md). An accepted keyword is checked to do what it does in the SDK; a
refused one raises a ``TypeError`` (our ``ArgumentTypeError``) that says why and what
to do instead, before anything is opened.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import SQLiteSession as SDKSQLiteSession
from agents.extensions.memory import AdvancedSQLiteSession as SDKAdvancedSQLiteSession
from agents.extensions.memory import EncryptedSession as SDKEncryptedSession
from agents.extensions.memory import SQLAlchemySession as SDKSQLAlchemySession

from eventstore import ArgumentTypeError, CancelledAfterCommit
from sessions import (
    AdvancedSQLAlchemySession,
    AdvancedSQLiteSession,
    EncryptedSession,
    SQLAlchemySession,
    SQLiteSession,
    StoreSession,
)

from .test_cancellation import CancelAtSuspension

# What convstore does with each keyword of each SDK constructor ("**kwargs": what the
# SDK passes on, decided by the keywords it reaches).
ACCEPTED = "accepted"
ONE_VALUE = "accepted with the value that asks for what convstore does; refused otherwise"
REFUSED = "refused"
DECISIONS: dict[str, dict[str, str]] = {
    "SQLiteSession": {
        "session_id": ACCEPTED,
        "db_path": ACCEPTED,
        "sessions_table": ONE_VALUE,
        "messages_table": ONE_VALUE,
        "session_settings": ACCEPTED,
    },
    "SQLAlchemySession": {
        "session_id": ACCEPTED,
        "engine": ACCEPTED,
        "create_tables": ACCEPTED,
        "sessions_table": ONE_VALUE,
        "messages_table": ONE_VALUE,
        "session_settings": ACCEPTED,
        "ensure_ascii": ONE_VALUE,
    },
    "SQLAlchemySession.from_url": {
        "session_id": ACCEPTED,
        "url": ACCEPTED,
        "engine_kwargs": ACCEPTED,
        "session_settings": ACCEPTED,
        "kwargs": ACCEPTED,  # passed on to the constructor, as in the SDK
    },
    "AdvancedSQLiteSession": {
        "session_id": ACCEPTED,
        "db_path": ACCEPTED,
        "create_tables": ACCEPTED,
        "logger": ACCEPTED,
        "session_settings": ACCEPTED,
        "kwargs": ACCEPTED,  # SQLiteSession's keywords, decided as above
    },
    "EncryptedSession": {
        "session_id": ACCEPTED,
        "underlying_session": ACCEPTED,
        "encryption_key": ACCEPTED,
        "ttl": ACCEPTED,
        "max_scan_items": REFUSED,
    },
}
SDK_CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    "SQLiteSession": SDKSQLiteSession.__init__,
    "SQLAlchemySession": SDKSQLAlchemySession.__init__,
    "SQLAlchemySession.from_url": SDKSQLAlchemySession.from_url,
    "AdvancedSQLiteSession": SDKAdvancedSQLiteSession.__init__,
    "EncryptedSession": SDKEncryptedSession.__init__,
}
KEY = "a master key of thirty-two chars!"


def test_every_sdk_keyword_is_decided() -> None:
    for name, constructor in SDK_CONSTRUCTORS.items():
        keywords = [
            p for p in inspect.signature(constructor).parameters if p not in ("self", "cls")
        ]
        assert sorted(keywords) == sorted(DECISIONS[name]), name


def test_the_sessions_guide_constructors_work_as_written(tmp_path: Path) -> None:
    """The forms of the Sessions guide, keyword for keyword."""
    db = tmp_path / "conversations.db"
    made = [
        SQLiteSession("user_123"),
        SQLiteSession("user_123", str(db)),
        SQLAlchemySession(session_id="user_123", db_url=f"sqlite:///{db}", create_tables=True),
        AdvancedSQLiteSession(session_id="user_123", db_path=str(db)),
    ]
    made.append(
        EncryptedSession(  # type: ignore[arg-type]
            session=SQLiteSession("user_123", str(db)),
            encryption_key="your-32-byte-key-here-for-aes256",
            ttl=3600,
        )
    )
    for session in made:
        session.close()


# -- logger= --------------------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def app_logger() -> Iterator[tuple[logging.Logger, Records, Records]]:
    """The application's logger (records kept), and what reaches convstore's own."""
    mine, theirs = Records(), Records()
    logger = logging.getLogger("test_sdk_keywords.app")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(mine)
    ours = logging.getLogger("convstore.sessions")
    level = ours.level
    ours.setLevel(logging.DEBUG)
    ours.addHandler(theirs)
    yield logger, mine, theirs
    logger.removeHandler(mine)
    ours.removeHandler(theirs)
    ours.setLevel(level)


LoggerFixture = tuple[logging.Logger, Records, Records]


async def test_advanced_logger_receives_the_sessions_records(
    tmp_path: Path, app_logger: LoggerFixture
) -> None:
    """As in the SDK: the session's records (here its branch changes) go to ``logger``."""
    logger, mine, theirs = app_logger
    async with AdvancedSQLiteSession(
        session_id="s", db_path=tmp_path / "db.sqlite", create_tables=True, logger=logger
    ) as session:
        await session.add_items(
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        )
        await session.create_branch_from_turn(2, "retry")
        await session.switch_to_branch("main")
        await session.delete_branch("retry")
    assert mine.messages == [
        "session 's': created branch 'retry' from 'main' and switched to it",
        "session 's': switched from branch 'retry' to 'main'",
        "session 's': deleted branch 'retry'",
    ]
    assert theirs.messages == [], "nothing of this session's went to convstore.sessions"


async def test_without_logger_the_records_go_to_convstore(
    tmp_path: Path, app_logger: LoggerFixture
) -> None:
    _, mine, theirs = app_logger
    async with AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "db.sqlite") as session:
        await session.add_items([{"role": "user", "content": "a"}])
        await session.create_branch_from_turn(1, "retry")
    assert theirs.messages == ["session 's': created branch 'retry' from 'main' and switched to it"]
    assert mine.messages == []


SESSIONS_WITH_LOGGER: dict[str, Callable[[Path, logging.Logger], StoreSession]] = {
    "SQLiteSession": lambda tmp, logger: SQLiteSession("s", tmp / "db.sqlite", logger=logger),
    "SQLAlchemySession": lambda tmp, logger: SQLAlchemySession(
        "s", db_url=f"sqlite:///{tmp / 'db.sqlite'}", create_tables=True, logger=logger
    ),
    "SQLAlchemySession.from_url": lambda tmp, logger: SQLAlchemySession.from_url(
        "s", url=f"sqlite:///{tmp / 'db.sqlite'}", create_tables=True, logger=logger
    ),
    "AdvancedSQLAlchemySession": lambda tmp, logger: AdvancedSQLAlchemySession.from_url(
        "s", url=f"sqlite:///{tmp / 'db.sqlite'}", create_tables=True, logger=logger
    ),
}


@pytest.mark.parametrize("kind", SESSIONS_WITH_LOGGER)
async def test_every_session_logs_its_cancelled_calls_to_its_logger(
    kind: str, tmp_path: Path, app_logger: LoggerFixture
) -> None:
    """A cancelled call's outcome is one of the session's records."""
    logger, mine, theirs = app_logger
    async with SESSIONS_WITH_LOGGER[kind](tmp_path, logger) as session:
        await session.add_items([{"n": 0}])
        with pytest.raises(asyncio.CancelledError) as caught:
            await asyncio.ensure_future(
                CancelAtSuspension(session.add_items([{"n": 1}]), 1, "suspending")
            )
    said = (
        "after it committed"
        if isinstance(caught.value, CancelledAfterCommit)
        else "before anything was written"
    )
    assert mine.messages == [f"session 's': add_items cancelled {said}"]
    assert theirs.messages == []


@pytest.mark.parametrize("logger", ["app", 42, print])
def test_a_logger_that_is_not_a_logger_is_refused(logger: Any, tmp_path: Path) -> None:
    with pytest.raises(ArgumentTypeError, match=r"logging\.getLogger") as caught:
        AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "db.sqlite", logger=logger)
    assert isinstance(caught.value, TypeError)
    assert list(tmp_path.iterdir()) == [], "nothing opened"


# -- table names, ensure_ascii --------------------------------------------------------------

DEFAULT_TABLES = {"sessions_table": "agent_sessions", "messages_table": "agent_messages"}


async def test_the_sdks_default_table_names_are_accepted(tmp_path: Path) -> None:
    """Spelled out, the SDK's defaults ask for the default tables: convstore's own."""
    db = tmp_path / "db.sqlite"
    item = {"role": "user", "content": "hi"}
    async with SQLiteSession("s", db, **DEFAULT_TABLES) as plain:
        await plain.add_items([item])
    url = f"sqlite:///{db}"
    for session in (
        SQLAlchemySession("s", db_url=url, **DEFAULT_TABLES),
        SQLAlchemySession.from_url("s", url=url, **DEFAULT_TABLES),
        AdvancedSQLiteSession(session_id="s", db_path=db, **DEFAULT_TABLES),
    ):
        async with session:
            assert await session.get_items() == [item]


@pytest.mark.parametrize("keyword", ["sessions_table", "messages_table"])
def test_other_table_names_are_refused_with_the_alternative(keyword: str, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    openers = [
        lambda: SQLiteSession("s", db, **{keyword: "my_table"}),
        lambda: AdvancedSQLiteSession(session_id="s", db_path=db, **{keyword: "my_table"}),
        lambda: SQLAlchemySession.from_url("s", url=f"sqlite:///{db}", **{keyword: "my_table"}),
    ]
    for opener in openers:
        with pytest.raises(ArgumentTypeError, match=r"convstore_.*search_path") as caught:
            opener()
        assert isinstance(caught.value, TypeError)
    assert list(tmp_path.iterdir()) == [], "nothing opened"


async def test_ensure_ascii_false_is_what_convstore_does(tmp_path: Path) -> None:
    """Non-ASCII is stored as is (readable UTF-8), and comes back the same."""
    item = {"role": "user", "content": "café ☕"}
    async with SQLAlchemySession.from_url(
        "s", url=f"sqlite:///{tmp_path / 'db.sqlite'}", create_tables=True, ensure_ascii=False
    ) as session:
        await session.add_items([item])
        assert await session.get_items() == [item]
        stored = (await session.store.read_stream("s"))[-1].payload
    assert "café ☕".encode() in stored
    assert b"\\u00e9" not in stored


@pytest.mark.parametrize("value", [True, 1, "false"])
def test_ensure_ascii_otherwise_is_refused_with_the_reason(value: Any, tmp_path: Path) -> None:
    with pytest.raises(ArgumentTypeError, match=r"exact UTF-8 JSON.*pass False") as caught:
        SQLAlchemySession("s", db_url=f"sqlite:///{tmp_path / 'db.sqlite'}", ensure_ascii=value)
    assert isinstance(caught.value, TypeError)
    assert list(tmp_path.iterdir()) == [], "nothing opened"


# -- from_url passes its keywords on --------------------------------------------------------


async def test_from_url_passes_its_keywords_to_the_constructor(tmp_path: Path) -> None:
    async with SQLAlchemySession.from_url(
        "s",
        url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        create_tables=True,
        session_settings={"limit": 1},
    ) as session:
        await session.add_items([{"n": 1}, {"n": 2}])
        assert await session.get_items() == [{"n": 2}]
    with pytest.raises(ArgumentTypeError, match="unexpected keyword argument 'bogus'"):
        SQLAlchemySession.from_url("s", url="sqlite://", bogus=1)
    with pytest.raises(ArgumentTypeError, match="url="):
        SQLAlchemySession.from_url("s", url="sqlite://", db_url="sqlite://")


# -- EncryptedSession ---------------------------------------------------------------------------


async def test_encrypted_session_takes_the_sdks_positional_form(tmp_path: Path) -> None:
    async with SQLiteSession("s", tmp_path / "db.sqlite") as base:
        session = EncryptedSession("s", base, KEY, 600)
        await session.add_items([{"role": "user", "content": "secret"}])
        assert await session.get_items() == [{"role": "user", "content": "secret"}]
        with pytest.raises(ArgumentTypeError, match="limit=") as caught:
            EncryptedSession("s", base, KEY, 600, 100)  # max_scan_items
        assert isinstance(caught.value, TypeError)

"""Sessions on every backend: one factory per test, every session closed at teardown.

On ``sqlite-memory`` each ``SQLiteSession(":memory:")`` has a private database, so a
test that needs several session objects on one database gets, after the first
``SQLiteSession``, plain :class:`~sessions.base.StoreSession` objects on its store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from eventstore import EventStore
from sessions import (
    AdvancedSQLAlchemySession,
    AdvancedSQLiteSession,
    BranchingSession,
    SQLAlchemySession,
    SQLiteSession,
    StoreSession,
    UsageSession,
)

from ..conftest import Backend


def open_session(
    backend_name: str, target: str, session_id: str, *, session_settings: Any = None
) -> StoreSession:
    """A new session object on ``target`` (what a user of that backend would write)."""
    if backend_name.startswith("sqlite"):
        return SQLiteSession(session_id, target, session_settings=session_settings)
    return SQLAlchemySession(
        session_id, db_url=target, create_tables=True, session_settings=session_settings
    )


def sqlalchemy_url(backend: Backend) -> str:
    """A URL ``SQLAlchemySession(db_url=...)`` accepts for the backend's database."""
    if backend.name == "sqlite-memory":
        return "sqlite://"
    if backend.name == "sqlite-file":
        return f"sqlite:///{backend.target}"
    return backend.target


class Sessions:
    """Opens sessions on one database and closes them all when the test ends."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._opened: list[StoreSession] = []
        self._memory_store: EventStore | None = None

    def open(self, session_id: str = "s", *, session_settings: Any = None) -> StoreSession:
        """Another session object on this test's database (sharing it on every backend)."""
        if self.backend.name == "sqlite-memory" and self._memory_store is not None:
            session: StoreSession = StoreSession(
                session_id, self._memory_store, session_settings=session_settings
            )
        else:
            session = open_session(
                self.backend.name,
                self.backend.target,
                session_id,
                session_settings=session_settings,
            )
            if self.backend.name == "sqlite-memory":
                self._memory_store = session.store
        self._opened.append(session)
        return session

    async def close(self) -> None:
        for session in reversed(self._opened):
            await session.close()


@pytest.fixture
async def sessions(backend: Backend) -> AsyncIterator[Sessions]:
    """A factory of sessions on the ``backend`` database."""
    made = Sessions(backend)
    yield made
    await made.close()


@pytest.fixture
def session(sessions: Sessions) -> StoreSession:
    """One session (id ``"s"``) on the ``backend`` database."""
    return sessions.open("s")


class OnStore(BranchingSession):
    """Another Advanced session object on an in-memory session's private database."""

    def __init__(self, session_id: str, other: StoreSession) -> None:
        StoreSession.__init__(self, session_id, other.store)

    async def _release(self) -> None:
        pass  # the store belongs to the first session


class AdvancedOnStore(UsageSession, OnStore):
    """The same, with usage (what AdvancedSQLiteSession has)."""


@pytest.fixture
async def advanced_sessions(backend: Backend) -> AsyncIterator[Callable[[str], UsageSession]]:
    """Opens Advanced sessions on the ``backend`` database (closed at teardown): on
    ``sqlite-memory`` the later ones share the first one's private database."""
    opened: list[UsageSession] = []

    def open_advanced(session_id: str = "s") -> UsageSession:
        session: UsageSession
        if backend.name == "sqlite-memory":
            first = next((s for s in opened if isinstance(s, AdvancedSQLiteSession)), None)
            if first is None:
                session = AdvancedSQLiteSession(session_id=session_id)
            else:
                session = AdvancedOnStore(session_id, first)
        elif backend.name == "sqlite-file":
            session = AdvancedSQLiteSession(session_id=session_id, db_path=backend.target)
        else:
            session = AdvancedSQLAlchemySession(
                session_id, db_url=backend.target, create_tables=True
            )
        opened.append(session)
        return session

    yield open_advanced
    for session in reversed(opened):
        await session.close()

"""AdvancedSQLiteSession and AdvancedSQLAlchemySession: branches, turns, time travel, usage.

Drop-ins for the SDK's ``agents.extensions.memory.AdvancedSQLiteSession`` (same
methods, argument names and return shapes), on SQLite and on every SQLAlchemy
database, because branches are folds of the same log.
"""

from __future__ import annotations

import os
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncEngine

from projections.usage import USAGE

from .sqlalchemy import SQLAlchemySession
from .sqlite import SQLiteSession
from .usage import UsageSession


class AdvancedSQLiteSession(UsageSession, SQLiteSession):
    """A SQLite session with branches, turns and time travel.

    ``create_tables`` is accepted for the SDK's sake: a SQLite database always gets
    its tables, as with :class:`SQLiteSession`.
    """

    def __init__(
        self,
        *,
        session_id: str,
        db_path: str | os.PathLike[str] = ":memory:",
        create_tables: bool = True,
        session_settings: Any = None,
    ) -> None:
        SQLiteSession.__init__(self, session_id, db_path, session_settings=session_settings)
        self._store.keep([USAGE])


class AdvancedSQLAlchemySession(UsageSession, SQLAlchemySession):
    """Branches, turns and time travel on PostgreSQL, MySQL/MariaDB or SQLite URLs,
    with :class:`SQLAlchemySession`'s constructors."""

    def __init__(
        self,
        session_id: str,
        *,
        engine: AsyncEngine | None = None,
        db_url: str | None = None,
        create_tables: bool = False,
        session_settings: Any = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        SQLAlchemySession.__init__(
            self,
            session_id,
            engine=engine,
            db_url=db_url,
            create_tables=create_tables,
            session_settings=session_settings,
            engine_kwargs=engine_kwargs,
        )
        self._store.keep([USAGE])

    @classmethod
    def from_url(
        cls,
        session_id: str,
        *,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        create_tables: bool = False,
        session_settings: Any = None,
    ) -> Self:
        """A session on a new engine for ``url`` (the SDK's form)."""
        return cls(
            session_id,
            db_url=url,
            engine_kwargs=engine_kwargs,
            create_tables=create_tables,
            session_settings=session_settings,
        )

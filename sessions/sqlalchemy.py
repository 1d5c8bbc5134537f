"""SQLAlchemySession: any SQLAlchemy database (PostgreSQL, MySQL/MariaDB, SQLite)."""

from __future__ import annotations

import logging
from typing import Any, Never, Self

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import ArgumentTypeError, ConfigurationError, EventStore, check_flag

from ._settings import refuse_unknown_keywords
from .base import HISTORY, StoreSession


def _check_url(url: object) -> str:
    """``url`` if it is a SQLAlchemy database URL, else a ConfigurationError saying why."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"not a database URL: {url!r} (e.g. 'postgresql://user:pass@host/db', "
            "'sqlite:///conversations.db'); for a SQLite file path use "
            "SQLiteSession(session_id, path)"
        )
    try:
        make_url(url)
    except ArgumentError as error:
        raise ConfigurationError(f"not a database URL: {url!r} ({error})") from error
    return url


class SQLAlchemySession(StoreSession):
    """Conversation history in a database reached through SQLAlchemy.

    Give either ``engine`` (shared, e.g. one per application; the session never
    disposes it) or ``db_url`` (the session creates and owns an engine: close the
    session, or a ResourceWarning says it was leaked). With ``create_tables=False``
    (the default, as in the SDK) the tables must exist already.

    ``read_engine`` (PostgreSQL) is an engine on a hot standby of that database: the
    session's history reads go there once it has replayed the session's own writes,
    and to the primary when it lags too far or fails (:mod:`eventstore.replica`).
    """

    def __init__(
        self,
        session_id: str,
        *,
        engine: AsyncEngine | None = None,
        db_url: str | None = None,
        create_tables: bool = False,
        session_settings: Any = None,
        engine_kwargs: dict[str, Any] | None = None,
        read_engine: AsyncEngine | None = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        **sdk_only: Never,
    ) -> None:
        refuse_unknown_keywords(type(self), sdk_only)
        check_flag("create_tables", create_tables)
        if read_engine is not None and not isinstance(read_engine, AsyncEngine):
            raise ConfigurationError(
                "read_engine must be a sqlalchemy.ext.asyncio.AsyncEngine, "
                f"not {type(read_engine).__name__}"
            )
        if (engine is None) == (db_url is None):
            raise ConfigurationError("give exactly one of engine= or db_url=")
        if engine is not None and not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"engine must be a sqlalchemy.ext.asyncio.AsyncEngine, not {type(engine).__name__}"
            )
        target: AsyncEngine | str = engine if engine is not None else _check_url(db_url)
        self._borrowed = engine is not None
        super().__init__(
            session_id,
            lambda: EventStore(
                target,
                create_tables=create_tables,
                projectors=[HISTORY],
                engine_kwargs=engine_kwargs,
                read_replica=read_engine,
            ),
            session_settings=session_settings,
            logger=logger,
        )

    @classmethod
    def from_url(
        cls,
        session_id: str,
        *,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        session_settings: Any = None,
        **kwargs: Any,
    ) -> Self:
        """A session on a new engine for ``url`` (the SDK's form): ``kwargs`` go to the
        constructor (``create_tables``, ``logger``, ...), as in the SDK."""
        if "db_url" in kwargs or "engine" in kwargs:
            raise ArgumentTypeError(
                "from_url() takes the database as url=, not db_url= or engine= "
                f"(for those, call {cls.__name__}(...) itself)"
            )
        return cls(
            session_id,
            db_url=url,
            engine_kwargs=engine_kwargs,
            session_settings=session_settings,
            **kwargs,
        )

    @property
    def engine(self) -> AsyncEngine:
        """The :class:`AsyncEngine` on this session's database.

        The one given, or the one made for ``db_url``. For a SQLite URL, convstore runs
        its own transactions on a dedicated thread (faster than going through aiosqlite),
        and this is an aiosqlite engine on the same database, made on first use and
        disposed when the session closes.
        """
        return self._store.engine

    def _owns_resources(self) -> bool:
        """Whether the session made its engine (one handed to it is its owner's)."""
        return not self._borrowed

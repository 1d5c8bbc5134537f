"""SQLAlchemySession: any SQLAlchemy database (PostgreSQL, MySQL/MariaDB, SQLite)."""

from __future__ import annotations

from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import ConfigurationError, EventStore

from .base import HISTORY, StoreSession


class SQLAlchemySession(StoreSession):
    """Conversation history in a database reached through SQLAlchemy.

    Give either ``engine`` (shared, e.g. one per application; the session never
    disposes it) or ``db_url`` (the session creates and owns an engine: close the
    session; on a server database a ResourceWarning says when one was leaked, while an
    embedded SQLite database is released by the garbage collector). With ``create_tables=False``
    (the default, as in the SDK) the tables must exist already.
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
    ) -> None:
        if (engine is None) == (db_url is None):
            raise ConfigurationError("give exactly one of engine= or db_url=")
        if engine is not None and not isinstance(engine, AsyncEngine):
            raise ConfigurationError(
                f"engine must be a sqlalchemy.ext.asyncio.AsyncEngine, not {type(engine).__name__}"
            )
        target: AsyncEngine | str = engine if engine is not None else str(db_url)
        super().__init__(
            session_id,
            lambda: EventStore(
                target,
                create_tables=create_tables,
                projectors=[HISTORY],
                engine_kwargs=engine_kwargs,
            ),
            session_settings=session_settings,
        )

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

    @property
    def engine(self) -> AsyncEngine | None:
        """The engine of a server database (None for the embedded SQLite runner)."""
        runner = self._store._runner
        engine = getattr(runner, "engine", None)
        return engine if isinstance(engine, AsyncEngine) else None

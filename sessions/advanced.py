"""AdvancedSQLiteSession and AdvancedSQLAlchemySession: branches, turns, time travel, usage.

Drop-ins for the SDK's ``agents.extensions.memory.AdvancedSQLiteSession`` (same
methods, argument names and return shapes), on SQLite and on every SQLAlchemy
database, because branches are folds of the same log.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Never

from eventstore import check_flag
from projections.usage_table import USAGE

from ._settings import refuse_unknown_keywords
from .sqlalchemy import SQLAlchemySession
from .sqlite import SQLiteSession
from .usage import UsageSession


class AdvancedSQLiteSession(UsageSession, SQLiteSession):
    """A SQLite session with branches, turns and time travel.

    ``create_tables`` is accepted for the SDK's sake: a SQLite database always gets
    its tables, as with :class:`SQLiteSession`. ``logger`` receives the session's own
    records (branch changes, cancelled calls), as the SDK's does.
    """

    def __init__(
        self,
        *,
        session_id: str,
        db_path: str | os.PathLike[str] = ":memory:",
        create_tables: bool = True,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        session_settings: Any = None,
        **sdk_only: Never,
    ) -> None:
        refuse_unknown_keywords(type(self), sdk_only)
        check_flag("create_tables", create_tables)
        SQLiteSession.__init__(
            self, session_id, db_path, session_settings=session_settings, logger=logger
        )
        self._store.keep([USAGE])


class AdvancedSQLAlchemySession(UsageSession, SQLAlchemySession):
    """Branches, turns and time travel on PostgreSQL, MySQL/MariaDB or SQLite URLs,
    with :class:`SQLAlchemySession`'s constructors (``engine=``, ``db_url=``,
    ``from_url``)."""

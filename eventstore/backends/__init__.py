"""Choosing a backend from what the user handed us: a path, a URL or an engine."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import ArgumentTypeError, ConfigurationError, MissingDependencyError
from .base import AsyncEngineRunner, Dialect, Runner, Timeouts
from .mysql import MySQLDialect
from .postgres import PostgresDialect
from .sqlite import SQLiteDialect, ThreadRunner

__all__ = [
    "Dialect",
    "Runner",
    "Timeouts",
    "check_sqlite_path",
    "dialect_for",
    "dialect_of",
    "open_runner",
]

# Plain URL schemes get the async driver convstore installs with the matching extra.
_ASYNC_DRIVERS = {
    "postgresql": ("postgresql", "asyncpg", "postgres"),
    "postgres": ("postgresql", "asyncpg", "postgres"),
    "mysql": ("mysql", "asyncmy", "mysql"),
    "mariadb": ("mariadb", "asyncmy", "mysql"),
}
_EXTRA_OF_DRIVER = {"asyncpg": "postgres", "asyncmy": "mysql", "aiomysql": "mysql"}


def dialect_for(name: str) -> Dialect:
    """The hooks for a SQLAlchemy dialect name."""
    if name == "sqlite":
        return SQLiteDialect()
    if name == "postgresql":
        return PostgresDialect()
    if name in ("mysql", "mariadb"):
        return MySQLDialect()
    raise ConfigurationError(f"convstore does not support the {name!r} database")


# One dialect object per database kind, shared by every caller of dialect_of.
_OF_NAME: dict[str, Dialect] = {}


def dialect_of(conn: Connection) -> Dialect:
    """The dialect object of the database a SQLAlchemy connection is on, to ask what
    it can do (e.g. ``reads_item_arrays``): one object per kind of database, shared,
    configured as :func:`dialect_for` makes it; ConfigurationError for a database
    convstore does not support."""
    name = conn.dialect.name
    found = _OF_NAME.get(name)
    if found is None:
        found = _OF_NAME[name] = dialect_for(name)
    return found


def check_sqlite_path(path: object) -> str:
    """``path`` as a string if it can name a SQLite database, else raise (up front)."""
    if not isinstance(path, str | os.PathLike):
        raise ArgumentTypeError(
            f"db_path must be a file path or ':memory:', not {type(path).__name__}"
        )
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ConfigurationError(f"db_path must be a file path or ':memory:', not {path!r}")
    if "\x00" in text:
        raise ConfigurationError(f"db_path cannot contain NUL: {path!r}")
    if text != ":memory:":
        directory = os.path.dirname(os.path.abspath(text))
        if not os.path.isdir(directory):
            raise ConfigurationError(
                f"cannot open the SQLite file {text!r}: its directory {directory!r} does not "
                "exist; create the directory first (os.makedirs) or give a path in an "
                "existing one"
            )
    return text


def open_runner(
    target: str | os.PathLike[str] | AsyncEngine,
    *,
    engine_kwargs: dict[str, Any] | None = None,
    timeouts: Timeouts | None = None,
) -> Runner:
    """A runner for a SQLite path, a SQLAlchemy URL or an existing async engine.

    ``timeouts`` bound lock waits (every SQLite database, and the connections of an
    engine made here from a URL); an engine handed in keeps its own settings.
    """
    if engine_kwargs is not None and not isinstance(engine_kwargs, dict):
        raise ArgumentTypeError(
            f"engine_kwargs must be a dict of create_async_engine arguments, "
            f"not {type(engine_kwargs).__name__}"
        )
    if isinstance(target, AsyncEngine):
        return AsyncEngineRunner(target, dialect_for(target.dialect.name), owned=False)
    if isinstance(target, os.PathLike) or (isinstance(target, str) and "://" not in target):
        return ThreadRunner(check_sqlite_path(target), timeouts)
    if not isinstance(target, str):
        raise ArgumentTypeError(
            "a database must be a SQLite path, a SQLAlchemy URL or an AsyncEngine, "
            f"not {type(target).__name__}"
        )
    try:
        url = make_url(target)
    except ArgumentError as error:
        raise ConfigurationError(f"not a database URL: {target!r}") from error
    url, pooler = _pooler_option(url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if pooler is not None:
            SQLiteDialect().pooled_connect_args()  # refuses, naming the fix
        # Any SQLite driver named in the URL gets the dedicated-thread runner, which
        # runs a transaction in one hop instead of one per statement. Its ``engine`` is
        # an aiosqlite engine on the same database (an in-memory one is made shareable).
        return ThreadRunner(check_sqlite_path(url.database or ":memory:"), timeouts, shareable=True)
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(f"convstore does not support the {backend!r} database")
    canonical, default_driver, extra = _ASYNC_DRIVERS[backend]
    driver = url.get_driver_name()
    if url.drivername == backend or driver in ("psycopg2", "pymysql", "mysqldb"):
        # A plain or synchronous URL: use the async driver of the matching extra.
        driver = default_driver
        url = url.set(drivername=f"{canonical}+{driver}")
    if importlib.util.find_spec(driver) is None:
        raise MissingDependencyError(driver, _EXTRA_OF_DRIVER.get(driver, extra))
    kwargs = dict(engine_kwargs or {})
    if pooler is not None:
        kwargs["connect_args"] = _pooled_connect_args(
            dialect_for(canonical), kwargs.get("connect_args")
        )
    try:
        engine = create_async_engine(url, **kwargs)
    except TypeError as error:
        raise ArgumentTypeError(f"engine_kwargs: {error}") from error
    except (ArgumentError, ValueError) as error:
        raise ConfigurationError(f"engine_kwargs: {error}") from error
    return AsyncEngineRunner(
        engine,
        dialect_for(engine.dialect.name),
        owned=True,
        timeouts=timeouts or Timeouts(),
        pooler=pooler,
    )


# The URL option that says connections go through a connection pooler, and the kinds
# convstore knows. Only transaction pooling needs anything of convstore: in session
# mode a client keeps its server connection, as on a direct connection; statement
# mode cannot run a transaction of several statements, which every append is.
POOLER_OPTION = "pooler"
_POOLERS = ("transaction",)


def _pooler_option(url: URL) -> tuple[URL, str | None]:
    """``url`` without convstore's ``pooler`` option (no driver takes it), and its value."""
    if POOLER_OPTION not in url.query:
        return url, None
    value = url.query[POOLER_OPTION]
    if value not in _POOLERS:
        raise ConfigurationError(
            f"pooler={value!r} is not supported: convstore works behind a pooler in "
            "transaction mode (pooler=transaction) or in session mode (no option needed); "
            "statement mode cannot run its multi-statement transactions"
        )
    return url.difference_update_query([POOLER_OPTION]), str(value)


def _pooled_connect_args(dialect: Dialect, given: object) -> dict[str, Any]:
    """The user's ``connect_args`` plus what the pooler needs; a contradiction is refused."""
    if given is not None and not isinstance(given, dict):
        raise ArgumentTypeError(
            f"engine_kwargs['connect_args'] must be a dict, not {type(given).__name__}"
        )
    merged = dict(given or {})
    for name, value in dialect.pooled_connect_args().items():
        if merged.setdefault(name, value) != value:
            raise ConfigurationError(
                f"connect_args {name}={merged[name]!r} cannot work behind a transaction "
                f"pooler (pooler=transaction sets {name}={value!r}): remove it"
            )
    return merged

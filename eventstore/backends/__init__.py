"""Choosing a backend from what the user handed us: a path, a URL or an engine."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import ConfigurationError, MissingDependencyError
from .base import AsyncEngineRunner, Dialect, Runner
from .mysql import MySQLDialect
from .postgres import PostgresDialect
from .sqlite import SQLiteDialect, ThreadRunner

__all__ = ["Dialect", "Runner", "dialect_for", "open_runner"]

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


def open_runner(
    target: str | os.PathLike[str] | AsyncEngine,
    *,
    engine_kwargs: dict[str, Any] | None = None,
) -> Runner:
    """A runner for a SQLite path, a SQLAlchemy URL or an existing async engine."""
    if isinstance(target, AsyncEngine):
        return AsyncEngineRunner(target, dialect_for(target.dialect.name), owned=False)
    if isinstance(target, os.PathLike) or "://" not in target:
        return ThreadRunner(os.fspath(target))
    try:
        url = make_url(target)
    except ArgumentError as error:
        raise ConfigurationError(f"not a database URL: {target!r}") from error
    backend = url.get_backend_name()
    if backend == "sqlite":
        # Any SQLite driver named in the URL gets the dedicated-thread runner, which
        # runs a transaction in one hop instead of one per statement. Its ``engine`` is
        # an aiosqlite engine on the same database (an in-memory one is made shareable).
        return ThreadRunner(url.database or ":memory:", shareable=True)
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
    engine = create_async_engine(url, **(engine_kwargs or {}))
    return AsyncEngineRunner(engine, dialect_for(engine.dialect.name), owned=True)

"""Reading another database without changing it (``convstore import-sdk`` reads the
SDK's tables through :class:`ReadOnlySource`).

A store reads one consistent snapshot of its own database through its runner
(:meth:`~eventstore.backends.base.Runner.snapshot`: each backend supplies that step);
this module opens a database that is not a store's, read-only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

from .backends import open_runner
from .backends.base import Runner, T, TxFunction, in_own_thread, translate_errors
from .backends.sqlite import SQLiteDialect
from .errors import ConfigurationError


def _connect_source(database: str) -> sqlite3.Connection:
    """A read-only connection to another application's SQLite file. Text that is not
    UTF-8 is read with its bytes kept (as lone surrogates, which no valid text has) for
    the reader to refuse row by row, instead of failing the whole query."""
    uri = Path(database).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.text_factory = lambda data: data.decode(errors="surrogateescape")
    return conn


class ReadOnlySource:
    """Another database, read without changing it: a SQLite file is opened read-only
    (never created, never switched to WAL); a URL gets an engine of its own, closed by
    :meth:`close`."""

    def __init__(self, target: str) -> None:
        self._engine: Engine | None = None
        self._runner: Runner | None = None
        path = target
        if "://" in target:
            url = make_url(target)
            if url.get_backend_name() == "sqlite":
                path = url.database or ""
        if "://" not in path:
            if not Path(path).is_file():
                raise ConfigurationError(f"no SQLite database at {path}")
            self._engine = create_engine(
                "sqlite://", creator=lambda: _connect_source(path), poolclass=StaticPool
            )
            self._dialect = SQLiteDialect()
        else:
            self._runner = open_runner(target)

    async def read(self, fn: TxFunction[T]) -> T:
        """Run the read-only ``fn`` in one transaction of the source."""
        if self._runner is not None:
            return await self._runner.snapshot(fn)
        engine = self._engine
        assert engine is not None

        def in_thread() -> T:
            with translate_errors(self._dialect), engine.connect() as conn, conn.begin():
                self._dialect.begin_snapshot(conn)
                return fn(conn)

        return await in_own_thread(in_thread)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()
        if self._engine is not None:
            self._engine.dispose()

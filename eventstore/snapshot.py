"""Reading one consistent snapshot of the database without stalling writers.

Audit, verify and export read the whole log. Holding the log's write lock for that
long would stall every append, so they read a snapshot instead, on a connection of
their own, while the application keeps writing:

* a SQLite file: a second, read-only connection in WAL mode, inside ``BEGIN``: every
  statement of the transaction sees the database as of its first read, and writers
  go on committing to the WAL meanwhile;
* PostgreSQL: a ``REPEATABLE READ, READ ONLY`` transaction (one snapshot for all its
  statements);
* MySQL/MariaDB: a ``REPEATABLE READ`` transaction, whose first read fixes the
  snapshot (InnoDB's consistent read);
* a private in-memory SQLite database has no other connection: the function runs on
  the store's own connection (no writer of another process exists to stall).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

from .backends import open_runner
from .backends.base import AsyncEngineRunner, Runner, T, TxFunction, translate_errors
from .backends.sqlite import SQLiteDialect, ThreadRunner
from .errors import ConfigurationError


async def run_snapshot(runner: Runner, fn: TxFunction[T]) -> T:
    """Run the read-only ``fn`` in one consistent snapshot; appends continue meanwhile."""
    if isinstance(runner, ThreadRunner):
        if runner.database == ":memory:":
            return await runner.run(lambda conn: _sqlite_snapshot(conn, fn), write=False)
        return await in_own_thread(lambda: _sqlite_file_snapshot(runner, fn))
    if isinstance(runner, AsyncEngineRunner):
        return await _engine_snapshot(runner, fn)
    raise TypeError(f"no snapshot reads for {type(runner).__name__}")


async def in_own_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread of its own and await its result.

    Not the loop's default executor: its idle threads outlive the call (until the
    loop's executor is shut down), and a long read should not hold one of the few
    threads other work shares. The thread is joined once it has answered; if the
    caller is cancelled, it finishes its read and exits on its own.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as error:  # handed to the awaiting task
            outcome = (False, error)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, *outcome)

    thread = threading.Thread(target=work, name="convstore-snapshot", daemon=True)
    thread.start()
    result = await future
    thread.join()  # it has answered: only its exit is left
    return result


def _sqlite_snapshot(conn: Connection, fn: TxFunction[T]) -> T:
    # The connection is in autocommit mode (isolation_level=None): an explicit BEGIN
    # makes the following reads one transaction, hence one snapshot.
    conn.exec_driver_sql("BEGIN")
    return fn(conn)


def _connect_read_only(database: str) -> sqlite3.Connection:
    uri = Path(database).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _connect_source(database: str) -> sqlite3.Connection:
    """A read-only connection to another application's SQLite file. Text that is not
    UTF-8 is read with its bytes kept (as lone surrogates, which no valid text has) for
    the reader to refuse row by row, instead of failing the whole query."""
    conn = _connect_read_only(database)
    conn.text_factory = lambda data: data.decode(errors="surrogateescape")
    return conn


def _sqlite_file_snapshot(runner: ThreadRunner, fn: TxFunction[T]) -> T:
    engine = create_engine(
        "sqlite://", creator=lambda: _connect_read_only(runner.database), poolclass=StaticPool
    )
    try:
        with translate_errors(runner.dialect), engine.connect() as conn, conn.begin():
            return _sqlite_snapshot(conn, fn)
    finally:
        engine.dispose()


async def _engine_snapshot(runner: AsyncEngineRunner, fn: TxFunction[T]) -> T:
    dialect = runner.dialect.name
    with translate_errors(runner.dialect):
        async with runner.engine.connect() as conn:
            if dialect == "sqlite":  # an aiosqlite engine the caller handed us
                return await conn.run_sync(lambda c: _in_transaction(c, fn, "BEGIN"))
            await conn.execution_options(isolation_level="REPEATABLE READ")
            first = "SET TRANSACTION READ ONLY" if dialect == "postgresql" else None
            return await conn.run_sync(lambda c: _in_transaction(c, fn, first))


def _in_transaction(conn: Connection, fn: TxFunction[T], first: str | None) -> T:
    with conn.begin():
        if first is not None:
            conn.execute(text(first))
        return fn(conn)


class ReadOnlySource:
    """Another database, read without changing it (``convstore import-sdk`` reads the
    SDK's tables through this): a SQLite file is opened read-only (never created,
    never switched to WAL); a URL gets an engine of its own, closed by :meth:`close`."""

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
            return await run_snapshot(self._runner, fn)
        engine = self._engine
        assert engine is not None

        def in_thread() -> T:
            with translate_errors(self._dialect), engine.connect() as conn, conn.begin():
                return _sqlite_snapshot(conn, fn)

        return await in_own_thread(in_thread)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.close()
        if self._engine is not None:
            self._engine.dispose()

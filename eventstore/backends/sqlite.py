"""SQLite: the embedded default.

Writers serialise on SQLite's own database lock, taken up front with
``BEGIN IMMEDIATE`` so a transaction never has to upgrade a read lock (the upgrade is
what makes concurrent SQLite writers fail with "database is locked"). Positions come
from the head row, like every backend, and are commit-ordered because only one writer
exists at a time.

File databases use WAL (readers never block the writer) with ``synchronous=FULL``:
a committed append survives power loss, the same durability as the SDK's sessions.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from ..errors import IntegrityError, OperationalError, PersistenceError, TransientError
from ..prepared import Prepared
from .base import Dialect, Runner, T, TxFunction, translate_errors

BUSY_TIMEOUT_SECONDS = 60.0

_BEGIN_WRITE = Prepared(text("BEGIN IMMEDIATE"))


class SQLiteDialect(Dialect):
    name: ClassVar[str] = "sqlite"

    def begin(self, conn: Connection, *, write: bool) -> None:
        # Reads run in autocommit mode: each statement sees one consistent snapshot,
        # and a read that needs several statements to agree asks for write=True.
        if write:
            _BEGIN_WRITE.execute(conn)

    def lock_stream(self) -> bool:
        return False  # BEGIN IMMEDIATE already holds the only write lock there is

    def classify(self, error: BaseException) -> type[PersistenceError]:
        name = getattr(error, "sqlite_errorname", None)
        if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or (
            isinstance(name, str) and name.startswith(("SQLITE_BUSY_", "SQLITE_LOCKED_"))
        ):
            return TransientError
        if isinstance(name, str) and name.startswith("SQLITE_CONSTRAINT"):
            return IntegrityError
        if isinstance(error, sqlite3.OperationalError):
            return OperationalError
        return PersistenceError


def _connect(database: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        database,
        timeout=BUSY_TIMEOUT_SECONDS,
        isolation_level=None,  # we issue BEGIN ourselves (see SQLiteDialect.begin)
        check_same_thread=False,  # used by one worker thread, created on the caller's
    )
    if database != ":memory:":
        _enable_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _connect_reader(database: str) -> sqlite3.Connection:
    """A read-only connection that reports busy at once instead of waiting."""
    conn = sqlite3.connect(database, timeout=0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL; another process initialising the file at once makes this busy."""
    for attempt in range(50):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorname", "") != "SQLITE_BUSY" or attempt == 49:
                raise
            time.sleep(0.05)


class _MemoryKey:
    """Identity of one private in-memory database."""


class ThreadRunner(Runner):
    """Runs each transaction whole on one dedicated thread that owns the connection.

    Handing work to a thread and back costs about 100 µs on the 2-core CI machine,
    while a short SQLite transaction takes 10-30 µs, so ``quick`` work skips the
    handoff where that cannot stall the event loop:

    * an in-memory database has no I/O and no other connection: quick transactions
      run on the calling thread whenever the worker is idle;
    * a file database answers quick reads on the calling thread from a second,
      read-only connection whose busy timeout is zero (in WAL mode a reader never waits
      for the writer); if SQLite says busy all the same, the read goes to the worker,
      which may wait. Writes always go to the worker: their commit waits for fsync.
    """

    def __init__(self, database: str) -> None:
        self.dialect = SQLiteDialect()
        self.database = database
        self._memory = database == ":memory:"
        self._key: object = (
            _MemoryKey() if self._memory else ("sqlite", str(Path(database).resolve()))
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convstore-sqlite")
        self._engine: Engine = create_engine(
            "sqlite://",
            creator=lambda: _connect(database),
            poolclass=StaticPool,
        )
        self._conn: Connection | None = None
        # Held by whoever runs a transaction on ``_conn`` (the worker or, when quick,
        # the caller), and by the caller while it reads on ``_reader``.
        self._conn_lock = threading.Lock()
        self._reader_lock = threading.Lock()
        self._reader_engine: Engine | None = (
            None
            if self._memory
            else create_engine(
                "sqlite://", creator=lambda: _connect_reader(database), poolclass=StaticPool
            )
        )
        self._reader: Connection | None = None
        self._finalizer = weakref.finalize(
            self, _shutdown, self._executor, self._engine, self._reader_engine
        )

    async def run(self, fn: TxFunction[T], *, write: bool, quick: bool = False) -> T:
        if quick and self._finalizer.alive:
            if self._memory:
                if self._conn_lock.acquire(blocking=False):
                    try:
                        return self._in_transaction(fn, write)
                    finally:
                        self._conn_lock.release()
            elif not write and self._reader_lock.acquire(blocking=False):
                try:
                    return self._read_here(fn)
                except TransientError:
                    pass  # busy after all: let the worker wait for it
                finally:
                    self._reader_lock.release()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn, write)

    def _run(self, fn: TxFunction[T], write: bool) -> T:
        with self._conn_lock:
            return self._in_transaction(fn, write)

    def _in_transaction(self, fn: TxFunction[T], write: bool) -> T:
        with translate_errors(self.dialect):
            if self._conn is None:
                self._conn = self._engine.connect()
            conn = self._conn
            with conn.begin():
                self.dialect.begin(conn, write=write)
                return fn(conn)

    def _read_here(self, fn: TxFunction[T]) -> T:
        assert self._reader_engine is not None
        with translate_errors(self.dialect):
            if self._reader is None:
                self._reader = self._reader_engine.connect()
            with self._reader.begin():
                return fn(self._reader)

    async def close(self) -> None:
        if not self._finalizer.alive:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_connection)
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._finalizer()

    def _close_connection(self) -> None:
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def engine_key(self) -> object:
        return self._key


def _shutdown(executor: ThreadPoolExecutor, engine: Engine, reader: Engine | None) -> None:
    try:
        executor.submit(engine.dispose)
    except RuntimeError:  # interpreter exit: the executor is already shut down
        engine.dispose()
    executor.shutdown(wait=False)
    if reader is not None:
        reader.dispose()

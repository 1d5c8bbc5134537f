"""SQLite: the embedded default.

Writers serialise on SQLite's own database lock, taken up front with
``BEGIN IMMEDIATE`` so a transaction never has to upgrade a read lock (the upgrade is
what makes concurrent SQLite writers fail with "database is locked"). Positions come
from the head row, like MariaDB, and are gapless and commit-ordered because only one
writer exists at a time (the audit checks every position up to the head).

File databases use WAL (readers never block the writer) with ``synchronous=FULL``:
a committed append survives power loss, the same durability as the SDK's sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from ..batch import STREAM
from ..errors import (
    ConfigurationError,
    ConvstoreError,
    IntegrityError,
    LockTimeoutError,
    OperationalError,
    PersistenceError,
    SerializationError,
    StoreClosedError,
    TransientError,
)
from ..prepared import Prepared
from .base import (
    Dialect,
    Runner,
    T,
    Timeouts,
    TxFunction,
    await_kept_outcome,
    in_own_thread,
    run_blocking,
    translate_errors,
)
from .signals import ChangeSignal

log = logging.getLogger("convstore.sqlite")

_BEGIN_WRITE = Prepared(text("BEGIN IMMEDIATE"))
_COMMIT = Prepared(text("COMMIT"))

# New database files are readable by their owner only: conversations are personal data.
FILE_MODE = 0o600


class SQLiteDialect(Dialect):
    name: ClassVar[str] = "sqlite"
    limit_name: ClassVar[str] = "SQLite's largest value (SQLITE_LIMIT_LENGTH)"
    # BEGIN IMMEDIATE orders every write: an append may start from the head its store
    # last wrote, confirmed by the UPDATE of the stream's row (docs/design.md).
    confirms_cached_heads: ClassVar[bool] = True
    # Its planner joins each event of a read's window to its items by a range of the
    # primary key, in index order, without a sort: one row per event is the fast read.
    reads_item_arrays: ClassVar[bool] = True
    # A read of the newest few items from small events (an agent's turns) is fastest
    # as one row per item, each item cut out of its payload by SQLite's substr().
    slices_items: ClassVar[bool] = True

    # A snapshot read is an explicit BEGIN (the connections are in autocommit mode):
    # every statement of the transaction then sees the database as of its first read,
    # and writers go on committing to the WAL meanwhile.
    snapshot_isolation: ClassVar[str | None] = None

    def __init__(self, *, read_only: bool = False) -> None:
        self.read_only = read_only

    def begin_snapshot(self, conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    def begin(self, conn: Connection, *, write: bool) -> None:
        # Reads run in autocommit mode: each statement sees one consistent snapshot,
        # and a read that needs several statements to agree asks for write=True.
        # A read-only database cannot take the write lock: its "write" transactions
        # begin deferred, and fail only if they actually write.
        if write and not self.read_only:
            _BEGIN_WRITE.execute(conn)

    def stream_head(self, conn: Connection, stream_id: str) -> Any:
        # BEGIN IMMEDIATE already holds the only write lock there is: no FOR UPDATE.
        return STREAM.first(conn, {"sid": stream_id})

    def max_value_bytes(self, conn: Connection) -> int | None:
        raw = conn.connection.driver_connection
        if isinstance(raw, sqlite3.Connection):
            return raw.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        return None

    def classify(self, error: BaseException) -> type[ConvstoreError]:
        name = getattr(error, "sqlite_errorname", None)
        if not isinstance(name, str):
            is_operational = isinstance(error, sqlite3.OperationalError)
            return OperationalError if is_operational else PersistenceError
        if name == "SQLITE_BUSY_SNAPSHOT":
            return TransientError  # a stale read snapshot: no waiting helps, a retry does
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            # SQLite waited the whole busy timeout (our lock_timeout) for the lock.
            return LockTimeoutError
        if name.startswith("SQLITE_CONSTRAINT"):
            return IntegrityError
        if name == "SQLITE_TOOBIG":
            return SerializationError
        if isinstance(error, sqlite3.OperationalError):
            return OperationalError
        return PersistenceError


def _writable(database: str) -> bool:
    """Whether ``database`` can be opened for writing (it, or its directory if new)."""
    if os.path.exists(database):
        return os.access(database, os.W_OK) and os.access(
            os.path.dirname(os.path.abspath(database)), os.W_OK
        )
    return True  # a new file: creating it reports any problem


def _create_private(database: str) -> None:
    """Create ``database`` empty with mode 0600 if it does not exist yet."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))


def _connect(
    database: str, busy_timeout: float, read_only: bool, *, uri: bool = False
) -> sqlite3.Connection:
    if read_only:
        return _connect_read_only(database, busy_timeout)
    if database != ":memory:" and not uri:
        _create_private(database)
    conn = sqlite3.connect(
        database,
        timeout=busy_timeout,
        isolation_level=None,  # we issue BEGIN ourselves (see SQLiteDialect.begin)
        check_same_thread=False,  # used by one worker thread, created on the caller's
        uri=uri,
    )
    if database != ":memory:" and not uri:
        _enable_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _connect_read_only(database: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection to a file we may not write (read-only file or mount).

    Never switches the journal mode. A WAL database needs its ``-shm`` file, which a
    read-only directory may not let SQLite create: it is then opened as immutable,
    which reads without locking (a process that can write the file elsewhere may change
    it unseen; for inspecting a read-only copy or mount that cannot happen).
    """
    uri = Path(database).resolve().as_uri()
    conn = sqlite3.connect(
        f"{uri}?mode=ro",
        uri=True,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn.close()
        conn = sqlite3.connect(
            f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False
        )
    conn.execute("PRAGMA query_only=1")
    return conn


def _connect_snapshot(database: str) -> sqlite3.Connection:
    """A read-only connection for one snapshot read."""
    uri = Path(database).resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _connect_reader(database: str, read_only: bool) -> sqlite3.Connection:
    """A read-only connection that reports busy at once instead of waiting."""
    if read_only:
        return _connect_read_only(database, 0)
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


# The most writes one commit takes (a bound on how long the first of them waits).
MAX_GROUP = 64

_SAVEPOINT = Prepared(text("SAVEPOINT convstore_write"))
_ROLLBACK_TO_SAVEPOINT = Prepared(text("ROLLBACK TO SAVEPOINT convstore_write"))
_RELEASE_SAVEPOINT = Prepared(text("RELEASE SAVEPOINT convstore_write"))


@dataclass(slots=True, eq=False)  # compared by identity (see ThreadRunner._withdraw)
class _Write:
    """A write waiting for the worker, and how to hand its outcome back."""

    fn: TxFunction[Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    # (ok, value) once the worker has settled it, on the caller's loop.
    outcome: tuple[bool, Any] | None = None
    # Where the outcome goes once the caller was cancelled (see base.await_kept_outcome).
    late: asyncio.Future[None] | None = None

    def settle(self, ok: bool, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self._deliver, ok, value)

    def _deliver(self, ok: bool, value: Any) -> None:
        self.outcome = (ok, value)
        if not self.future.done():
            if ok:
                self.future.set_result(value)
            else:
                self.future.set_exception(value)
        if self.late is not None and not self.late.done():
            self.late.set_result(None)


class _MemoryKey:
    """Identity of one private in-memory database."""


class ThreadRunner(Runner):
    """Runs each transaction whole on one dedicated thread that owns the connection.

    Handing work to a thread and back costs several times what a short SQLite
    transaction takes (docs/design.md, "One transaction function, two ways to run
    it"), so ``quick`` work skips the handoff where that cannot stall the event loop:

    * an in-memory database has no I/O and no other connection: every transaction
      runs on the calling thread (under a lock, for callers on several threads), and
      no worker thread is ever started, so a thousand in-memory sessions cost no
      thread at all;
    * a file database answers quick reads on the calling thread from a second,
      read-only connection whose busy timeout is zero (in WAL mode a reader never waits
      for the writer); if SQLite says busy all the same, the read goes to the worker,
      which may wait. Writes always go to the worker: their commit waits for fsync.

    Writes to a file are committed in groups: the worker takes every write waiting
    when it gets to them (up to :data:`MAX_GROUP`), runs each in its own savepoint of
    one transaction, and commits once. A write that raises is rolled back to its
    savepoint and only its caller gets the error; every caller's result is delivered
    after the shared commit, so durability is exactly that of one commit per write,
    but N waiting writers pay for one fsync instead of N.
    """

    def __init__(
        self, database: str, timeouts: Timeouts | None = None, *, shareable: bool = False
    ) -> None:
        self.database = database
        self._memory = database == ":memory:"
        # Read-only file or mount: reads and inspection work, writes fail with SQLite's
        # own "readonly database" error.
        self.read_only = not self._memory and not _writable(database)
        self.dialect = SQLiteDialect(read_only=self.read_only)
        lock_timeout = (timeouts or Timeouts()).lock_timeout
        # SQLite's busy timeout is the lock wait bound; None means SQLite's default (5 s).
        busy = 5.0 if lock_timeout is None else lock_timeout
        read_only = self.read_only
        self._key: object = (
            _MemoryKey() if self._memory else ("sqlite", str(Path(database).resolve()))
        )
        # What ``engine`` connects to. An in-memory database that other connections must
        # reach (``shareable``) is a named one of SQLite's "memdb" VFS instead of a
        # private ":memory:" (a little slower, docs/design.md: so only when asked).
        self._engine_url: str | None
        if self._memory and shareable:
            connect_to, uri = f"file:/convstore-{uuid.uuid4().hex}?vfs=memdb", True
            self._engine_url = f"sqlite+aiosqlite:///{connect_to}&uri=true"
        else:
            connect_to, uri = database, False
            self._engine_url = (
                None if self._memory else f"sqlite+aiosqlite:///{Path(database).resolve()}"
            )
        self._async_engine: AsyncEngine | None = None
        # No thread for an in-memory database: it has no I/O to wait for, so every
        # transaction runs on the caller's thread (1,000 sessions cost no thread).
        self._executor = (
            None
            if self._memory
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="convstore-sqlite")
        )
        self._engine: Engine = create_engine(
            "sqlite://",
            creator=lambda: _connect(connect_to, busy, read_only, uri=uri),
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
                "sqlite://",
                creator=lambda: _connect_reader(database, read_only),
                poolclass=StaticPool,
            )
        )
        self._reader: Connection | None = None
        self._writes: list[_Write] = []
        self._writes_lock = threading.Lock()
        self._draining = False
        self._finalizer = weakref.finalize(
            self, _shutdown, self._executor, self._engine, self._reader_engine
        )

    async def run(self, fn: TxFunction[T], *, write: bool, quick: bool = False) -> T:
        if self._executor is None:  # in memory: on this thread, one transaction at a time
            if not self._finalizer.alive:
                raise StoreClosedError("this SQLite database is closed")
            return self._run(fn, write)
        if (
            quick
            and not write
            and self._finalizer.alive
            and self._reader_lock.acquire(blocking=False)
        ):
            try:
                return self._read_here(fn)
            except (TransientError, LockTimeoutError):
                pass  # busy after all: let the worker wait for it
            finally:
                self._reader_lock.release()
        if write:
            return await self._write_in_group(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn, write)

    def _withdraw(self, write: _Write) -> bool:
        """Take ``write`` back if the worker has not taken it yet (it will then never run)."""
        with self._writes_lock:
            if write in self._writes:
                self._writes.remove(write)
                return True
            return False

    async def _write_in_group(self, fn: TxFunction[T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        write = _Write(fn, future, loop)
        with self._writes_lock:
            self._writes.append(write)
            start = not self._draining
            self._draining = True
        if start:
            assert self._executor is not None
            try:
                self._executor.submit(self._drain)
            except RuntimeError:  # the worker is shut down (the store was closed)
                self._abandon(StoreClosedError("this SQLite database is closed"))
        result: T = await await_kept_outcome(write, lambda: self._withdraw(write))
        return result

    def _drain(self) -> None:
        """Worker: commit the waiting writes, a group at a time, until none is left."""
        group: list[_Write] = []
        try:
            while True:
                with self._writes_lock:
                    group = self._writes[:MAX_GROUP]
                    del self._writes[:MAX_GROUP]
                    if not group:
                        self._draining = False
                        return
                self._commit_group(group)  # (a withdrawn write is no longer listed)
        except BaseException as error:  # never leave a writer waiting for nothing
            for write in group:
                write.settle(False, error)
            self._abandon(error)
            raise

    def _abandon(self, error: BaseException) -> None:
        """Fail every waiting write with ``error`` and stop draining."""
        with self._writes_lock:
            waiting, self._writes = self._writes, []
            self._draining = False
        for write in waiting:
            write.settle(False, error)

    def _commit_group(self, group: list[_Write]) -> None:
        def run_group(conn: Connection) -> list[tuple[bool, Any]]:
            if len(group) == 1:  # nothing to isolate it from
                return [(True, group[0].fn(conn))]
            return [self._in_savepoint(conn, w.fn) for w in group]

        try:
            outcomes = self._run(run_group, True)
        except Exception as error:  # the transaction as a whole failed: nothing committed
            if len(group) > 1:
                log.warning("a group commit of %d writes failed: %s", len(group), error)
            for write in group:
                write.settle(False, error)
            return
        for write, (ok, value) in zip(group, outcomes, strict=True):
            write.settle(ok, value)

    def _in_savepoint(self, conn: Connection, fn: TxFunction[Any]) -> tuple[bool, Any]:
        _SAVEPOINT.execute(conn)
        try:
            with translate_errors(self.dialect):
                value = fn(conn)
        except Exception as error:
            _ROLLBACK_TO_SAVEPOINT.execute(conn)
            _RELEASE_SAVEPOINT.execute(conn)
            return False, error
        _RELEASE_SAVEPOINT.execute(conn)
        return True, value

    async def snapshot(self, fn: TxFunction[T]) -> T:
        """On a file, a read-only connection of its own in WAL mode, on a thread of its
        own; in memory (no other connection exists, nor a writer of another process to
        stall), the runner's own connection."""
        if self._memory:
            return await self.run(lambda conn: self._in_snapshot(conn, fn), write=False)
        return await in_own_thread(lambda: self._file_snapshot(fn))

    def _in_snapshot(self, conn: Connection, fn: TxFunction[T]) -> T:
        """``fn`` after the snapshot's BEGIN."""
        self.dialect.begin_snapshot(conn)
        return fn(conn)

    def _file_snapshot(self, fn: TxFunction[T]) -> T:
        """``fn`` in a snapshot of the file, on a read-only connection made for it."""
        engine = create_engine(
            "sqlite://", creator=lambda: _connect_snapshot(self.database), poolclass=StaticPool
        )
        try:
            with translate_errors(self.dialect), engine.connect() as conn, conn.begin():
                return self._in_snapshot(conn, fn)
        finally:
            engine.dispose()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _run(self, fn: TxFunction[T], write: bool) -> T:
        with self._conn_lock:
            return self._in_transaction(fn, write)

    def _in_transaction(self, fn: TxFunction[T], write: bool) -> T:
        with translate_errors(self.dialect):
            conn = self._connection()
            if write and not self.read_only:
                return self._in_write_transaction(conn, fn)
            with conn.begin():
                self.dialect.begin(conn, write=write)
                return fn(conn)

    @staticmethod
    def _in_write_transaction(conn: Connection, fn: TxFunction[T]) -> T:
        """``BEGIN IMMEDIATE``, ``fn``, ``COMMIT``, as statements of their own.

        The same transaction as ``with conn.begin()`` (SQLAlchemy's begin emits nothing
        on this connection, its commit calls the driver's), without SQLAlchemy's
        transaction object on every write. ``fn`` may still use ``conn.execute``, which
        starts SQLAlchemy's bookkeeping of a transaction; it is ended after the COMMIT.
        """
        _BEGIN_WRITE.execute(conn)
        try:
            result = fn(conn)
            _COMMIT.execute(conn)
        except BaseException:
            driver = conn.connection.driver_connection
            if isinstance(driver, sqlite3.Connection):
                driver.rollback()  # a no-op if the transaction already ended
            if conn.in_transaction():
                conn.rollback()
            raise
        if conn.in_transaction():
            conn.commit()  # nothing left to commit: only SQLAlchemy's bookkeeping
        return result

    def _read_here(self, fn: TxFunction[T]) -> T:
        """``fn`` on the read-only connection, in autocommit mode.

        The same transaction as ``with reader.begin()`` (which emits nothing on this
        connection: each statement reads one consistent snapshot, as
        :meth:`SQLiteDialect.begin` says), without SQLAlchemy's transaction object,
        which costs a noticeable part of a quick read (docs/design.md). If ``fn`` uses
        ``conn.execute``, SQLAlchemy begins its bookkeeping of a transaction; it is
        ended here, so the next read starts clean.
        """
        assert self._reader_engine is not None
        with translate_errors(self.dialect):
            reader = self._reader
            if reader is None:
                reader = self._reader = self._reader_engine.connect()
            try:
                return fn(reader)
            finally:
                if reader.in_transaction():
                    reader.rollback()  # a read: nothing to keep

    @property
    def engine(self) -> AsyncEngine:
        """An :class:`AsyncEngine` (aiosqlite) on this same database, made on first use.

        For the user to inspect the database or run their own SQL: convstore's own
        transactions do not go through it. Disposed when the runner closes.
        """
        if self._async_engine is None:
            if self._engine_url is None:
                raise ConfigurationError(
                    "a private in-memory SQLite database has no engine: open it with "
                    "the URL 'sqlite://' (SQLAlchemySession) to get one"
                )
            if not self._finalizer.alive:
                raise StoreClosedError("this SQLite database is closed")
            self._async_engine = create_async_engine(self._engine_url)
        return self._async_engine

    async def close(self) -> None:
        if not self._finalizer.alive:
            return
        if self._async_engine is not None:
            await self._async_engine.dispose()
        if self._executor is None:
            self._close_connection()
        else:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._close_connection)
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._finalizer()

    def close_blocking(self) -> None:
        """:meth:`close` on the calling thread, which must run no event loop of this
        runner's (the idle timer of shared stores, process exit, an explicit release):
        waits for a transaction in flight, then closes the connections (the last one on
        a file checkpoints WAL and removes the ``-wal`` and ``-shm`` files)."""
        if not self._finalizer.alive:
            return
        if self._async_engine is not None:  # of some loop: disposed on a loop of its own
            engine, self._async_engine = self._async_engine, None
            try:
                run_blocking(engine.dispose)
            except Exception as error:  # its connections go with the process
                log.debug("disposing the aiosqlite engine failed: %s", error)
        self._close_connection()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._finalizer()

    def schema_mark(self) -> object | None:
        """SQLite's schema version of the file (``PRAGMA schema_version``: every process
        that changes a table changes it), read on the read-only connection; None in
        memory, once closed, or when that connection is busy."""
        if self._memory or not self._finalizer.alive:
            return None
        if not self._reader_lock.acquire(blocking=False):
            return None
        try:
            return self._read_here(_schema_version)
        except ConvstoreError:
            return None
        finally:
            self._reader_lock.release()

    def _close_connection(self) -> None:
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            # Close the file now (the last connection checkpoints WAL and removes the
            # -wal and -shm files), not whenever the finalizer's dispose gets to run.
            self._engine.dispose()

    def change_signal(self, stream_id: str | None, *, listen: bool = True) -> ChangeSignal:
        if self._memory or not listen:  # a private database: only this process writes
            return ChangeSignal()
        return DataVersionSignal(self.database, self.read_only)

    @property
    def engine_key(self) -> object:
        return self._key

    @property
    def revalidate(self) -> bool:
        # A file can be deleted and created again at the same path (a test fixture, a
        # reset development database): another database, whatever this process knew.
        return not self._memory


def _schema_version(conn: Connection) -> int:
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return int(driver.execute("PRAGMA schema_version").fetchone()[0])


class DataVersionSignal(ChangeSignal):
    """Woken when another connection, in any process, commits to the file: a
    connection of its own asks SQLite's ``PRAGMA data_version`` (a counter in the
    shared WAL index, read without touching the database) every
    :attr:`check_interval` seconds while a reader waits."""

    check_interval: ClassVar[float | None] = 0.02
    default_poll_interval: ClassVar[float] = 1.0

    def __init__(self, database: str, read_only: bool) -> None:
        super().__init__()
        self._database = database
        self._read_only = read_only
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await super().open()
        self._conn = _connect_reader(self._database, self._read_only)

    def _version(self) -> int:
        if self._conn is None:
            return 0
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def mark(self) -> Any:
        return (super().mark(), self._version())

    def changed(self, mark: Any) -> bool:
        pokes, version = mark
        return bool(super().changed(pokes) or self._version() != version)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _shutdown(executor: ThreadPoolExecutor | None, engine: Engine, reader: Engine | None) -> None:
    # Also run by the garbage collector, which may interrupt any code, including an
    # ``executor.submit`` of another runner that holds concurrent.futures' global lock:
    # so no submit here (it would wait for that lock forever). Nothing can be queued on
    # an unreachable runner, and the connection may be closed from any thread.
    if executor is not None:
        executor.shutdown(wait=False)
    engine.dispose()
    if reader is not None:
        reader.dispose()

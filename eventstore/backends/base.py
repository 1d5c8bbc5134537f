"""What a backend supplies: SQL hooks (one subclass of :class:`Dialect` per database)
and a way to run a transaction (:class:`Runner`).

The store writes each transaction once, as a plain function of a synchronous
SQLAlchemy :class:`~sqlalchemy.Connection`. A runner decides where it executes:

* :class:`AsyncEngineRunner` runs it through ``AsyncConnection.run_sync`` on an async
  driver (asyncpg, asyncmy, aiosqlite): one network round trip per statement, no thread.
* :class:`~eventstore.backends.sqlite.ThreadRunner` runs it whole on a dedicated thread
  that owns a ``sqlite3`` connection: one thread hop per transaction instead of one per
  statement, which is what makes the embedded default fast.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import (
    CancelledAfterCommit,
    ConvstoreError,
    PersistenceError,
)
from ..prepared import Prepared

T = TypeVar("T")

log = logging.getLogger("convstore.eventstore")

_ADVANCE_HEAD = Prepared(
    text(
        "UPDATE convstore_head SET position = position + :count WHERE name = 'log' "
        "RETURNING position"
    )
)
_UPDATE_STREAM = Prepared(
    text(
        "UPDATE convstore_streams SET version = :new_version, head_hash = :new_head_hash, "
        "updated_at = :now WHERE stream_id = :sid"
    )
)
_TRACK = Prepared(
    text("UPDATE convstore_tracking SET position = :position WHERE projection = :projection")
)
TxFunction = Callable[[Connection], T]


class Dialect(abc.ABC):
    """The SQL that differs between databases, and how their errors are classified."""

    name: ClassVar[str]

    def begin(self, conn: Connection, *, write: bool) -> None:  # noqa: B027 (optional hook)
        """Called first in every transaction (e.g. to take SQLite's write lock)."""

    def lock_stream(self) -> bool:
        """Whether the stream row is read ``FOR UPDATE`` (row locks exist)."""
        return True

    def advance_head(
        self,
        conn: Connection,
        count: int,
        track: Sequence[str] = (),
        stream: Mapping[str, Any] | None = None,
    ) -> int:
        """Reserve ``count`` positions; return the last one. Holds the log's write lock
        until the transaction ends, which is what makes positions commit-ordered.

        The tracking rows of the projections named in ``track`` (those the transaction
        keeps current) are set to that last position too, and ``stream`` (``sid``,
        ``new_version``, ``new_head_hash``, ``now``) updates an existing stream's row:
        a backend may do all of it in one round trip.
        """
        last = self.reserve_positions(conn, count)
        if track:
            _TRACK.execute_many(conn, [{"projection": n, "position": last} for n in track])
        if stream is not None:
            _UPDATE_STREAM.execute(conn, stream)
        return last

    def reserve_positions(self, conn: Connection, count: int) -> int:
        """The head-row update alone: advance by ``count``, return the last position."""
        return int(_ADVANCE_HEAD.scalar(conn, {"count": count}))

    def schema_lock(self, conn: Connection) -> AbstractContextManager[None]:
        """Serialise concurrent table creation (several processes opening one database)."""
        return nullcontext()

    @abc.abstractmethod
    def classify(self, error: BaseException) -> type[PersistenceError]:
        """The convstore error class for a driver error, chosen by its code."""


@contextmanager
def translate_errors(dialect: Dialect) -> Iterator[None]:
    """The one place where driver errors become convstore errors."""
    try:
        yield
    except ConvstoreError:
        raise
    except exc.DBAPIError as error:
        cls = dialect.classify(error.orig or error)
        raise cls(f"{dialect.name}: {error.orig}") from error
    except exc.SQLAlchemyError as error:
        raise PersistenceError(f"{dialect.name}: {error}") from error


async def outcome_then_cancel(
    work: asyncio.Future[T], *, withdraw: Callable[[], bool] | None = None
) -> T:
    """Await a write; if the caller is cancelled meanwhile, give the write a definite outcome.

    A write that is cancelled while the database runs it may still commit (the COMMIT
    can be on the wire), and then the caller's natural retry duplicates it. So a
    cancelled caller first tries ``withdraw()`` (the write has not started: it never
    will, and CancelledError is raised at once); otherwise it waits, through any further
    cancellations, until the write has committed or rolled back, and only then
    propagates the cancellation: plain :class:`asyncio.CancelledError` if nothing was
    written, :class:`~eventstore.errors.CancelledAfterCommit` (carrying the result) if it
    was. A write is short (its locks are bounded by the database's timeouts), so the
    wait is too.
    """
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        if withdraw is not None and withdraw():
            raise
        while not work.done():
            try:
                await asyncio.wait((work,))
            except asyncio.CancelledError:
                continue  # already cancelled: the first cancellation is the one raised
        if work.cancelled() or work.exception() is not None:
            raise
        raise CancelledAfterCommit(work.result()) from None


def cancelled_instead(error: Exception) -> asyncio.CancelledError | None:
    """A CancelledError to raise instead of ``error`` if the current task is being cancelled.

    A driver interrupted by cancellation may fail in its clean-up (asyncmy closes the
    connection and the rollback then fails with "Cancelled during execution"): that
    error must not replace the caller's CancelledError.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return asyncio.CancelledError()
    return None


class Runner(abc.ABC):
    """Runs a transaction function somewhere and returns its result."""

    dialect: Dialect

    @abc.abstractmethod
    async def run(self, fn: TxFunction[T], *, write: bool, quick: bool = False) -> T:
        """Run ``fn`` in one transaction: committed if it returns, rolled back if it raises.

        With ``write=False`` only each statement is guaranteed a consistent snapshot
        (SQLite reads run in autocommit mode, PostgreSQL reads at READ COMMITTED).
        ``quick`` is the caller's promise that ``fn`` is short and bounded (a few
        statements on a few rows): a runner may then run it on the calling thread, where
        that is cheaper than handing it to a worker.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections (and the engine, when this runner created it)."""

    @property
    @abc.abstractmethod
    def engine_key(self) -> object:
        """Identity of the database, for caching 'tables are ready' per process."""

    @property
    @abc.abstractmethod
    def engine(self) -> AsyncEngine:
        """An :class:`AsyncEngine` on this runner's database (for users to inspect it)."""


class AsyncEngineRunner(Runner):
    """Transactions on an :class:`AsyncEngine`, through ``run_sync``."""

    def __init__(self, engine: AsyncEngine, dialect: Dialect, *, owned: bool) -> None:
        self._engine = engine
        self.dialect = dialect
        self.owned = owned
        # The event loop the pooled connections were made in (asyncpg and asyncmy
        # connections belong to one loop).
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def run(self, fn: TxFunction[T], *, write: bool, quick: bool = False) -> T:
        if write:
            # In a task of its own, so that cancelling the caller cannot interrupt it
            # between COMMIT and its reply (see outcome_then_cancel).
            return await outcome_then_cancel(asyncio.ensure_future(self._run(fn, write)))
        return await self._run(fn, write)

    async def _run(self, fn: TxFunction[T], write: bool) -> T:
        self._loop = asyncio.get_running_loop()
        try:
            with translate_errors(self.dialect):
                async with self._engine.connect() as conn:
                    result = await conn.run_sync(self._in_transaction, fn, write)
                    return result
        except Exception as error:
            cancelled = cancelled_instead(error)
            if cancelled is None:
                raise
            raise cancelled from error

    def _in_transaction(self, conn: Connection, fn: TxFunction[T], write: bool) -> T:
        with conn.begin():
            self.dialect.begin(conn, write=write)
            return fn(conn)

    async def close(self) -> None:
        if not self.owned:
            return
        if self._loop is not None and self._loop.is_closed():
            # Closed after the loop that made the connections ended (a plain
            # ``session.close()`` after ``asyncio.run``): they cannot be closed politely
            # any more, so the pool is dropped and the server ends them.
            log.debug("dropping the connections of a finished event loop")
            self._engine.sync_engine.dispose(close=False)
            return
        await self._engine.dispose()

    @property
    def engine_key(self) -> object:
        return self.engine.sync_engine

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
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy import Connection, event, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..batch import INSERT_EVENTS, INSERT_STREAM, STREAM_FOR_UPDATE, LiveSetChanged, StreamWrite
from ..checks import check_seconds
from ..errors import (
    CancelledAfterCommit,
    ConfigurationError,
    ConnectionLostError,
    ConvstoreError,
    PersistenceError,
)
from ..prepared import Prepared
from .signals import ChangeSignal

T = TypeVar("T")

log = logging.getLogger("convstore.eventstore")

_ADVANCE_HEAD = Prepared(
    text(
        "UPDATE convstore_head SET position = position + :count WHERE name = 'log' "
        "RETURNING position, generation"
    )
)
_LAST_POSITION = Prepared(text("SELECT position FROM convstore_head WHERE name = 'log'"))
_UPDATE_STREAM = Prepared(
    text(
        "UPDATE convstore_streams SET version = :new_version, head_hash = :new_head_hash, "
        "updated_at = :now WHERE stream_id = :sid"
    )
)
# The same, only if the row still holds what the append took its head from.
_UPDATE_STREAM_FROM = Prepared(
    text(
        "UPDATE convstore_streams SET version = :new_version, head_hash = :new_head_hash, "
        "updated_at = :now WHERE stream_id = :sid AND version = :old_version "
        "AND head_hash = :old_head_hash"
    )
)
TxFunction = Callable[[Connection], T]


class Dialect(abc.ABC):
    """The SQL that differs between databases, and how their errors are classified."""

    name: ClassVar[str]
    # Positions 1, 2, 3 … with no gap (every backend that serialises appends on the
    # head row); False where positions may skip numbers (see backends/postgres.py).
    dense_positions: ClassVar[bool] = True
    # Whether an append may start from the stream head (version, hash) its store last
    # wrote instead of reading the stream's row, the UPDATE of that row confirming it
    # (``confirm`` of :meth:`write_batch`). Only where the write transaction already holds the
    # lock that orders appends to one stream (SQLite's BEGIN IMMEDIATE): elsewhere the
    # row lock must be taken before anything else (see backends/postgres.py).
    confirms_cached_heads: ClassVar[bool] = False

    # Whether a read runs its statements in autocommit mode instead of a transaction
    # (PostgreSQL: at READ COMMITTED every statement takes its own snapshot anyway, so
    # BEGIN and COMMIT would only add two round trips to every read).
    autocommit_reads: ClassVar[bool] = False

    # Whether a history read may ask for one row per event its items come from (a
    # join of each event to a range of its items) instead of one row per item: only
    # where the planner runs that join as index ranges without statistics. The read
    # plan is chosen by this flag (projections/history_reads.py), not by the name of
    # the database; docs/design.md, "Reads as JSON arrays", has the measured plans.
    reads_item_arrays: ClassVar[bool] = False

    # Whether a read of the newest few items may cut each item out of its event's
    # payload in the database (``substr``), one row per item and no payload sent,
    # where that is cheaper than the read of one row per event (projections/
    # history_reads.py; docs/performance.md has the measurements).
    slices_items: ClassVar[bool] = False

    def begin(self, conn: Connection, *, write: bool) -> None:  # noqa: B027 (optional hook)
        """Called first in every transaction (e.g. to take SQLite's write lock)."""

    # The isolation level of a snapshot read on an engine (:meth:`Runner.snapshot`):
    # REPEATABLE READ, one snapshot for every statement of the transaction (InnoDB's
    # consistent read is fixed by the first); None: the engine's own.
    snapshot_isolation: ClassVar[str | None] = "REPEATABLE READ"

    def begin_snapshot(self, conn: Connection) -> None:  # noqa: B027 (optional hook)
        """The first statement of a snapshot read, after its isolation level is set."""

    def stream_head(self, conn: Connection, stream_id: str) -> Any:
        """The stream's (version, head hash) row (None: no such stream), locked until the
        transaction ends (``SELECT ... FOR UPDATE``) where row locks exist."""
        return STREAM_FOR_UPDATE.first(conn, {"sid": stream_id})

    def lock_streams(self, conn: Connection, stream_ids: Iterable[str]) -> None:  # noqa: B027
        """The first statement of every transaction that writes events of these streams
        (an append, an import's batch): where positions are taken before the writer
        holds the lock that orders its stream (PostgreSQL, see backends/postgres.py),
        wait here until no other transaction writes to them, so that each stream's
        positions follow its versions. Nothing by default: the stream's row lock (or
        SQLite's one write lock) is taken before any position is."""

    def write_batch(self, conn: Connection, write: StreamWrite) -> int | None:
        """Write one append (its stream locked, its version checked, its events hashed):
        reserve positions, advance or create the stream's row, insert the events and
        apply the live projections to them; return the last position.

        The one step of an append that a backend may write its own way (the store owns
        the transaction around it). Raises :class:`LiveSetChanged` if the database's
        live projection set is no longer the one ``write.projections`` holds. With
        ``write.confirm``, ``write.head`` is the head this store wrote last: the
        stream's row is advanced only if it still holds it, and if it does not, nothing
        is written and None is returned (the writer reads the row and tries again)."""
        count = len(write.events)
        stream = write.stream_values()
        if write.confirm:
            assert write.head is not None
            old = {"old_version": write.head[0], "old_head_hash": write.head[1]}
            if _UPDATE_STREAM_FROM.rowcount(conn, {**stream, **old}) != 1:
                return None  # written meanwhile by another process or store
            last_position, generation = self.advance_head(conn, count)
        else:
            existing = stream if write.head is not None else None
            last_position, generation = self.advance_head(conn, count, stream=existing)
        if generation != write.projections.generation:
            raise LiveSetChanged()
        if write.head is None:
            INSERT_STREAM.execute(conn, stream)
        rows, recorded = write.rows(last_position - count + 1)
        INSERT_EVENTS.execute_many(conn, rows)
        self.announce(conn, write.stream_id)
        for projector in write.projections.live:
            projector.apply(conn, recorded)
        return last_position

    def advance_head(
        self,
        conn: Connection,
        count: int,
        stream: Mapping[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Reserve ``count`` positions; return the last one and the generation of the
        live projection set (eventstore/registry.py). Holds the log's write lock until
        the transaction ends, which is what makes positions commit-ordered.

        ``stream`` (``sid``, ``new_version``, ``new_head_hash``, ``now``) updates an
        existing stream's row too: a backend may do both in one round trip.
        """
        reserved = self.reserve_positions(conn, count)
        if stream is not None:
            _UPDATE_STREAM.execute(conn, stream)
        return reserved

    def reserve_positions(self, conn: Connection, count: int) -> tuple[int, int]:
        """The head-row update alone: advance by ``count``; the last position and the
        live-set generation."""
        row = _ADVANCE_HEAD.first(conn, {"count": count})
        if row is None:
            raise exc.NoResultFound("the head row is missing")
        return int(row[0]), int(row[1])

    def lock_log(self, conn: Connection) -> None:
        """Inside a write transaction: make appends wait until it ends, and let it see
        every append committed before (rebuild, verify, a projection's catch-up)."""
        self.reserve_positions(conn, 0)

    def read_horizon(self, conn: Connection) -> int | None:
        """First statement of a transaction that tails the log: a bound such that no
        event can still commit at a position below it, for the reads that follow in
        the same transaction to stay under (``position < bound``); None where every
        committed position is safe already (appends serialised until commit)."""
        return None

    def announce(self, conn: Connection, stream_id: str) -> None:  # noqa: B027 (optional hook)
        """Inside an append's transaction, once its events are written: tell readers
        tailing the log in other processes, when it commits, that ``stream_id`` grew
        (PostgreSQL: ``NOTIFY``). Nothing where they find out otherwise."""

    def change_signal(
        self, engine: AsyncEngine, stream_id: str | None, *, listen: bool
    ) -> ChangeSignal:
        """What wakes a reader tailing the log of this database (``stream_id``: only
        that stream's), on a connection of ``engine`` where it needs one; ``listen``
        False asks for polling alone (see :class:`ChangeSignal`)."""
        return ChangeSignal()

    def last_position(self, conn: Connection, *, locked: bool = False) -> int:
        """The last position a reader can see; with ``locked`` (:meth:`lock_log` is
        held), the last committed one. 0 for an empty log."""
        return int(_LAST_POSITION.scalar(conn))

    def migrate_log(self, conn: Connection, found: int) -> None:  # noqa: B027 (optional hook)
        """After :func:`eventstore.schema.migrate`: what a backend adds to bring the
        log from revision ``found`` to the current one."""

    def align_positions(self, conn: Connection) -> None:  # noqa: B027 (optional hook)
        """When a store prepares the database: make sure the positions later appends
        take lie above every stored one (where positions do not come from the head
        row alone: a log restored into another PostgreSQL cluster)."""

    def schema_lock(self, conn: Connection) -> AbstractContextManager[None]:
        """Serialise concurrent table creation (several processes opening one database)."""
        return nullcontext()

    @abc.abstractmethod
    def classify(self, error: BaseException) -> type[ConvstoreError]:
        """The convstore error class for a driver error, chosen by its code."""

    def session_setup(self, timeouts: Timeouts, conn: Any) -> list[str]:
        """Statements that bound lock waits and idle transactions on a new connection
        of an engine the store created (``conn`` is the driver's connection)."""
        return []

    def pooled_connect_args(self) -> dict[str, Any]:
        """Driver arguments for an engine made from a URL with ``?pooler=transaction``:
        a connection pooler in transaction mode (PgBouncer) may run each transaction of
        one client connection on another server connection."""
        raise ConfigurationError(
            f"the URL option pooler=transaction is for PostgreSQL behind PgBouncer, "
            f"not {self.name}: remove it from the URL"
        )

    def driver_error(self, error: Exception) -> type[ConvstoreError] | None:
        """The convstore error class for an exception the driver raised past SQLAlchemy
        (it does not wrap those of its own set-up of a new connection), if it is one."""
        return None

    def check_read_replica(self) -> None:
        """Refuse a read replica where :meth:`write_position` and :meth:`replayed` are
        not implemented."""
        raise ConfigurationError(
            f"read replicas are supported on PostgreSQL (hot standby), not {self.name}: "
            "remove read_replica= / read_engine="
        )

    def write_position(self, conn: Connection) -> int:  # pragma: no cover - see above
        """On the primary: a position in its log of changes (bytes from its start) at
        or after the commit of every transaction that has ended."""
        raise NotImplementedError

    def replayed(self, conn: Connection, position: int) -> bool:  # pragma: no cover
        """On a replica: whether it has applied the primary's changes up to ``position``
        (every later statement then sees them)."""
        raise NotImplementedError

    def transaction_setup(self, timeouts: Timeouts) -> Callable[[Connection], None] | None:
        """Behind a transaction pooler, where a session setting would stay on whichever
        server connection ran it: what bounds the waits of one write transaction,
        run first in it (None: nothing to set)."""
        return None

    def max_value_bytes(self, conn: Connection) -> int | None:
        """The largest payload one statement can carry to this database, if bounded."""
        return None

    def wire_size(self, payload: bytes) -> int:
        """How many bytes ``payload`` takes in the statement that sends it."""
        return len(payload)

    limit_name: ClassVar[str] = "the largest value it stores"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Bounds on waiting, in seconds (None: the database's own setting).

    ``lock_timeout``: how long a write waits for a lock before it fails with
    :class:`~eventstore.errors.LockTimeoutError`. ``idle_in_transaction``: how long the
    server lets a connection of ours sit idle inside a transaction before it ends the
    connection (a stalled client then releases its locks instead of holding them).
    """

    lock_timeout: float | None = 10.0
    idle_in_transaction: float | None = 5.0

    def __post_init__(self) -> None:
        for name in ("lock_timeout", "idle_in_transaction"):
            value = getattr(self, name)
            if value is not None:
                check_seconds(name, value, most=86400, zero=False)


@contextmanager
def translate_errors(dialect: Dialect, *, committing: bool = False) -> Iterator[None]:
    """The one place where driver errors become convstore errors.

    ``committing`` marks the commit itself: a connection lost there leaves the outcome
    unknown, while one lost before it certainly rolled the transaction back.
    """
    try:
        yield
    except ConvstoreError:
        raise
    except exc.DBAPIError as error:
        if error.connection_invalidated:
            raise ConnectionLostError(
                f"{dialect.name}: connection lost: {error.orig}", outcome_unknown=committing
            ) from error
        cls = dialect.classify(error.orig or error)
        if issubclass(cls, ConnectionLostError):  # e.g. the server shutting down
            raise cls(f"{dialect.name}: {error.orig}", outcome_unknown=committing) from error
        raise cls(f"{dialect.name}: {error.orig}") from error
    except exc.SQLAlchemyError as error:
        raise PersistenceError(f"{dialect.name}: {error}") from error
    except ConnectionRefusedError as error:  # nothing was sent: nothing was written
        raise ConnectionLostError(f"{dialect.name}: cannot connect: {error}") from error
    except OSError as error:  # a socket error the driver did not wrap
        raise ConnectionLostError(
            f"{dialect.name}: connection lost: {error}", outcome_unknown=committing
        ) from error
    except Exception as error:
        found = dialect.driver_error(error)
        if found is None:
            raise
        if issubclass(found, ConnectionLostError):
            raise found(f"{dialect.name}: {error}", outcome_unknown=committing) from error
        raise found(f"{dialect.name}: {error}") from error


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
        with suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, *outcome)

    thread = threading.Thread(target=work, name="convstore-snapshot", daemon=True)
    thread.start()
    result = await future
    thread.join()  # it has answered: only its exit is left
    return result


class KeptOutcome(Protocol):
    """A write handed to someone else to run, whose outcome is kept on it: ``future``
    is the caller's, ``outcome`` is ``(ok, result or error)`` once it has run (even if
    ``future`` was cancelled), and ``late`` is set by a cancelled caller that waits for
    that outcome (whoever settles the write completes it)."""

    future: asyncio.Future[Any]
    outcome: tuple[bool, Any] | None
    late: asyncio.Future[None] | None


async def await_kept_outcome(write: KeptOutcome, withdraw: Callable[[], bool]) -> Any:
    """The write's result; if the caller is cancelled meanwhile, what
    :func:`outcome_then_cancel` does (``withdraw()`` it if it has not started, else wait
    for its outcome and raise CancelledAfterCommit if it committed), without the extra
    future and loop turn of ``asyncio.shield`` on every write."""
    future = write.future
    try:
        return await future
    except asyncio.CancelledError:
        future.cancel()  # (a no-op if it was settled as the cancellation came)
        if not future.cancelled():
            if future.exception() is not None:
                raise
            raise CancelledAfterCommit(future.result()) from None
        if withdraw():
            raise
        if write.outcome is None:
            write.late = late = future.get_loop().create_future()
            while not late.done():
                try:
                    await asyncio.wait((late,))
                except asyncio.CancelledError:
                    continue  # already cancelled: the first cancellation is the one raised
        assert write.outcome is not None
        ok, value = write.outcome
        if not ok:
            raise
        raise CancelledAfterCommit(value) from None


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


def run_blocking(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Await ``fn()`` on a thread of its own with an event loop of its own, and wait:
    for synchronous code, whether or not its thread runs a loop."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(fn())
        except BaseException as error:
            failed.append(error)

    worker = threading.Thread(target=run, name="convstore-close")
    worker.start()
    worker.join()
    if failed:
        raise failed[0]


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
    async def snapshot(self, fn: TxFunction[T]) -> T:
        """Run the read-only ``fn`` in one consistent snapshot of the database, on a
        connection of its own where one can be had, so that appends go on meanwhile
        (audit, verify and export read the whole log: holding the log's lock that long
        would stall every writer)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections (and the engine, when this runner created it)."""

    @property
    @abc.abstractmethod
    def engine_key(self) -> object:
        """Identity of the database, for caching 'tables are ready' per process."""

    # The kind of connection pooler between this runner and the database, if it was
    # told of one (``?pooler=transaction``): None for a direct connection.
    pooler: str | None = None

    @property
    def handed_in(self) -> bool:
        """Whether the engine is the user's (handed to the store, kept as configured)."""
        return False

    @property
    def owns_engine(self) -> bool:
        """Whether the runner made the engine it holds (from a URL), which closing it
        disposes of (a store left unclosed then warns)."""
        return False

    @property
    def revalidate(self) -> bool:
        """Whether a new store must check, with one quick read, that what this process
        cached about the database (tables ready, live projections) still holds."""
        return False

    def schema_mark(self) -> object | None:
        """A mark of the database's schema, read on the calling thread without waiting,
        that changes whenever any process changes a table; None where there is none to
        read cheaply (a server) or it could not be read at once."""
        return None

    def close_blocking(self) -> None:
        """:meth:`close` from synchronous code (a timer thread, process exit)."""
        run_blocking(self.close)

    @property
    @abc.abstractmethod
    def engine(self) -> AsyncEngine:
        """An :class:`AsyncEngine` on this runner's database (for users to inspect it)."""

    def change_signal(self, stream_id: str | None, *, listen: bool = True) -> ChangeSignal:
        """What wakes a reader tailing this database's log (see :class:`ChangeSignal`)."""
        return ChangeSignal()

    @property
    def database_id(self) -> object:
        """The database, as every runner on it in this process names it (engines made
        from one URL are distinct, their database is not)."""
        return self.engine_key


class AsyncEngineRunner(Runner):
    """Transactions on an :class:`AsyncEngine`, through ``run_sync``.

    On an engine it created (``owned``), every new connection gets the ``timeouts``
    as session settings (no cost per transaction); behind a connection pooler in
    transaction mode (``pooler="transaction"``), where a session setting would stay on
    whichever server connection ran it, each write transaction sets them for itself
    instead (:meth:`Dialect.transaction_setup`). An engine the user hands over is left
    as configured: its connections are theirs (set the same limits in its
    ``connect_args``, as docs/reliability.md shows, or on the database role).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        dialect: Dialect,
        *,
        owned: bool,
        timeouts: Timeouts | None = None,
        pooler: str | None = None,
    ) -> None:
        self._engine = engine
        self.dialect = dialect
        self.owned = owned
        self.pooler = pooler
        self._bound_transaction: Callable[[Connection], None] | None = None
        if owned and timeouts is not None:
            if pooler is None:
                _set_up_connections(engine, dialect, timeouts)
            else:
                self._bound_transaction = dialect.transaction_setup(timeouts)
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
                    if not write and self.dialect.autocommit_reads:
                        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    result = await conn.run_sync(self._in_transaction, fn, write)
                    return result
        except Exception as error:
            cancelled = cancelled_instead(error)
            if cancelled is None:
                raise
            raise cancelled from error

    async def snapshot(self, fn: TxFunction[T]) -> T:
        """A connection of the engine's pool at the dialect's snapshot isolation
        (PostgreSQL: ``REPEATABLE READ, READ ONLY``; MySQL/MariaDB: ``REPEATABLE READ``;
        an aiosqlite engine: an explicit ``BEGIN``)."""
        dialect = self.dialect
        with translate_errors(dialect):
            async with self._engine.connect() as conn:
                if dialect.snapshot_isolation is not None:
                    await conn.execution_options(isolation_level=dialect.snapshot_isolation)
                return await conn.run_sync(self._in_snapshot, fn)

    def _in_snapshot(self, conn: Connection, fn: TxFunction[T]) -> T:
        """``fn`` in a snapshot transaction of ``conn``."""
        with conn.begin():
            self.dialect.begin_snapshot(conn)
            return fn(conn)

    @property
    def handed_in(self) -> bool:
        return not self.owned

    @property
    def owns_engine(self) -> bool:
        return self.owned

    def _in_transaction(self, conn: Connection, fn: TxFunction[T], write: bool) -> T:
        transaction = conn.begin()
        try:
            self.dialect.begin(conn, write=write)
            if write and self._bound_transaction is not None:
                self._bound_transaction(conn)
            result = fn(conn)
        except BaseException:
            transaction.rollback()
            raise
        with translate_errors(self.dialect, committing=True):
            transaction.commit()
        return result

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

    def change_signal(self, stream_id: str | None, *, listen: bool = True) -> ChangeSignal:
        return self.dialect.change_signal(self._engine, stream_id, listen=listen)

    @property
    def database_id(self) -> object:
        return ("url", self._engine.url.render_as_string(hide_password=True))


def _set_up_connections(engine: AsyncEngine, dialect: Dialect, timeouts: Timeouts) -> None:
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        statements = dialect.session_setup(timeouts, dbapi_connection)
        if not statements:
            return
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)

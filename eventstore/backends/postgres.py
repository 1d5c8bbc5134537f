"""PostgreSQL (asyncpg): the production target.

Commit-ordered reading without a global lock. A ``BIGSERIAL`` hands out numbers when
rows are inserted, not when they commit: writer A takes 10, writer B takes 11 and
commits first, and a reader tailing ``position > 9`` sees 11, moves on, and never sees
10 when A commits. Until schema revision 3 every append took its positions from one
row of ``convstore_head`` and held that row's lock until commit, so appends to
*different* sessions waited for each other, and one writer paused inside an append
(a GC pause, SIGSTOP, a network partition) stopped every session's writes.

Now an event's position is derived from its transaction's id: ``xid << 20`` plus its
offset in the transaction (:data:`POSITION_SHIFT`; the id plus a per-database offset,
see below). Transaction ids are handed out in one cluster-wide order, and a reader
only reads positions below the oldest transaction still in progress ``<< 20``, read in
a statement before the one its rows come from (:meth:`PostgresDialect.read_horizon`).
Every transaction below that bound has committed (its rows are visible) or rolled
back (they never will be), and any transaction that commits later has an id at or
above it, hence higher positions: a reader resuming after the last position it saw
never skips an event. Appends to different streams take no common lock and never
wait for each other. What changes: positions have gaps (they are unique and strictly
increasing in reading order, not 1, 2, 3 …), and an event becomes readable by position
once every older write transaction of the cluster has ended, so a transaction held
open elsewhere delays tailing readers (``read_all``, a projection's catch-up) — never
writers, and never reads of a session, which read projections, not positions.

Transaction ids belong to the cluster, not to the database: a log restored with
``pg_dump`` into a cluster whose counter is behind its source's holds positions above
the ones that cluster's transactions would take, and new events would land below them
(a tailing reader skips them, ``audit`` reports them reordered). So a position is
really ``(xid + offset) << 20`` plus the event's offset in its append, where the offset
is ``convstore_head.position`` (0 until needed; log schema revision 4), read ``FOR
SHARE`` in the statement that computes the positions, and a reader's bound is ``(oldest
transaction in progress + offset) << 20``, the offset read in the same snapshot. When a
store prepares the database it compares the log's highest position with the next
transaction id; if the log is ahead it raises the offset under the head row's
exclusive lock, logging a warning (:meth:`PostgresDialect.align_positions`).

Within one stream positions must follow versions (a reader tailing the log sees each
session's events in order, and ``audit`` checks it), and a transaction id is taken as
soon as a transaction first needs one, not when it wins the stream's lock: locking a
row needs the id, so a writer gets its id while it *waits* for the stream's row lock.
With two writers waiting, the one that came last may win the lock first and write the
next version with the higher id, and the other then writes the version after it with
the lower id. So every transaction that writes a stream's events first takes a lock
that assigns no transaction id: the advisory lock of the stream
(``pg_advisory_xact_lock`` on a 64-bit hash of its id, :meth:`PostgresDialect.lock_streams`),
as its first statement. Only its holder can then take an id for that stream, after
every earlier writer of the stream has committed (an advisory lock is released after
the commit is visible), so it gets a higher id than theirs. Writers of different
streams take different locks (two ids with the same hash only share one, at a chance
of 2**-64 per pair).

The live projection set (eventstore/registry.py) is still guarded by the head row:
each append reads its ``generation`` ``FOR SHARE`` in the statement that computes its
positions (shared locks do not conflict with each other), and whoever changes the set
or needs appends to stop (:meth:`PostgresDialect.lock_log`) locks it exclusively,
which waits for appends in flight and holds new ones back until it commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import TypeCompiler

from ..errors import (
    ConnectionLostError,
    ConvstoreError,
    IntegrityError,
    InvalidArgumentError,
    LockTimeoutError,
    OperationalError,
    PersistenceError,
    PoolerError,
    SchemaError,
    TransientError,
)
from ..prepared import Prepared
from ..schema import Key
from .base import Dialect, Timeouts
from .signals import ChangeSignal

log = logging.getLogger("convstore.eventstore")

# Bits of a position below the transaction id: the most events one transaction writes
# is 2**20 - 1, and transaction ids stay below 2**43 (8.8e12 transactions).
POSITION_SHIFT = 20
MAX_EVENTS_PER_TRANSACTION = (1 << POSITION_SHIFT) - 1

# The head row's ``position`` is the transaction-id offset here (0 unless a restore
# raised it: see PostgresDialect.align_positions). An append reads it ``FOR SHARE`` in
# the statement that computes its positions, so it cannot change under an append.
_HEAD_SHARED = (
    "head AS (SELECT generation, position AS xid_offset FROM convstore_head "
    "WHERE name = 'log' FOR SHARE)"
)
_TRANSACTION_BASE = f"((pg_current_xact_id()::text::bigint + xid_offset) << {POSITION_SHIFT})"
_RESERVE = Prepared(
    text(f"WITH {_HEAD_SHARED} SELECT {_TRANSACTION_BASE} + :count, generation FROM head")
)
# The same and the stream's row in one round trip (a data-modifying CTE runs even
# though nothing selects from it).
_RESERVE_AND_STREAM = Prepared(
    text(
        f"WITH {_HEAD_SHARED}, "
        "streamed AS (UPDATE convstore_streams SET version = :new_version, "
        "head_hash = :new_head_hash, updated_at = :now WHERE stream_id = :sid) "
        f"SELECT {_TRANSACTION_BASE} + :count, generation FROM head"
    )
)
# The advisory lock of one stream, or of several (keys in ascending order, so that
# two transactions locking overlapping sets cannot deadlock): see lock_streams.
_LOCK_STREAM = Prepared(text("SELECT pg_advisory_xact_lock(:key)"))
_LOCK_STREAMS = Prepared(
    text(
        "SELECT pg_advisory_xact_lock(key) FROM unnest(CAST(:keys AS bigint[])) "
        "WITH ORDINALITY AS keys(key, n) ORDER BY n"
    )
)
_LOCK_LOG = Prepared(text("SELECT name FROM convstore_head WHERE name = 'log' FOR UPDATE"))
# The snapshot's next transaction id, and the transactions in progress in this
# database (prepared ones too), read in one statement: the ids are taken after the
# snapshot, so a transaction below ``next`` that is not listed has ended before any
# later statement's snapshot. ``hidden`` counts sessions whose ids we may not see.
# The transaction-id offset comes from the same snapshot.
_IN_PROGRESS = Prepared(
    text(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
        "array(SELECT backend_xid::text::bigint FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_xid IS NOT NULL), "
        "array(SELECT transaction::text::bigint FROM pg_prepared_xacts "
        "WHERE database = current_database()), "
        "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND NOT pg_has_role('pg_read_all_stats', 'MEMBER') "
        "AND usesysid IS DISTINCT FROM (SELECT oid FROM pg_roles WHERE rolname = current_user)), "
        "current_setting('transaction_isolation'), pg_is_in_recovery(), "
        "(SELECT position FROM convstore_head WHERE name = 'log')"
    )
)
# Whether the log holds positions at or above those the next transaction would take
# (a log restored into a cluster whose transaction counter is behind its source's),
# and the oldest transaction id in progress, in one snapshot.
_ALIGNMENT = Prepared(
    text(
        f"SELECT (SELECT coalesce(max(position), 0) >> {POSITION_SHIFT} FROM convstore_events), "
        "pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
        "(SELECT position FROM convstore_head WHERE name = 'log'), "
        "current_setting('transaction_read_only') = 'on'"
    )
)
_SET_OFFSET = Prepared(text("UPDATE convstore_head SET position = :offset WHERE name = 'log'"))
_LAST_READABLE = Prepared(
    text("SELECT coalesce(max(position), 0) FROM convstore_events WHERE position < :bound")
)
_LAST_COMMITTED = Prepared(text("SELECT coalesce(max(position), 0) FROM convstore_events"))

# Read replicas (eventstore/replica.py). The WAL insert position lies at or after the
# commit record of every transaction that has ended. On a standby, what it has replayed;
# on a server that is not one (a promoted standby, or the primary itself named as the
# replica) its own insert position, which covers all it holds.
_WAL_INSERTED = Prepared(text("SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint"))
_WAL_REPLAYED = Prepared(
    text(
        "SELECT (coalesce(pg_last_wal_replay_lsn(), pg_current_wal_insert_lsn()) - '0/0') "
        ">= CAST(:lsn AS bigint)"
    )
)

# The channel an append NOTIFYs (payload: its stream id) and tailing readers LISTEN
# on. Notifications are per database, so one name serves every database.
CHANNEL = "convstore_events"
_ANNOUNCE = Prepared(text(f"SELECT pg_notify('{CHANNEL}', :sid)"))

# A bytea value (an event's payload) holds at most 1 GB.
_MAX_FIELD_BYTES = 2**30 - 1

# An arbitrary constant naming convstore's schema-creation lock.
_SCHEMA_LOCK_KEY = 0x636F6E76  # "conv"

_BY_SQLSTATE: dict[str, type[PersistenceError]] = {
    # convstore prepares no statement by name itself: the driver's were lost between
    # server connections (a transaction pooler the engine was not set up for).
    "26000": PoolerError,  # invalid_sql_statement_name
    "42P05": PoolerError,  # duplicate_prepared_statement
    # The server ended the connection or does not take new ones (a restart, a fast or
    # immediate shutdown, a standby being promoted): retried on a new connection.
    "57P01": ConnectionLostError,  # admin_shutdown
    "57P02": ConnectionLostError,  # crash_shutdown
    "57P03": ConnectionLostError,  # cannot_connect_now (starting up, shutting down)
    "40001": TransientError,  # serialization_failure
    "40P01": TransientError,  # deadlock_detected
    "55P03": LockTimeoutError,  # lock_not_available: lock_timeout expired
    "42P01": SchemaError,  # undefined_table
    "42703": SchemaError,  # undefined_column
}
_BY_CLASS: dict[str, type[PersistenceError]] = {
    "23": IntegrityError,  # integrity_constraint_violation
    "08": ConnectionLostError,  # connection_exception (PgBouncer's when its server fails)
    "53": OperationalError,  # insufficient_resources
    "57": OperationalError,  # operator_intervention (e.g. query_canceled)
}


def stream_lock_key(stream_id: str) -> int:
    """The advisory lock key of a stream: the first 8 bytes of the BLAKE2b hash of its
    id, as a signed 64-bit integer (the same in every process and release)."""
    digest = hashlib.blake2b(stream_id.encode(), digest_size=8, person=b"convstore").digest()
    return int.from_bytes(digest, "big", signed=True)


def _full_xid(xid: int, near: int) -> int:
    """The 64-bit id of the 32-bit transaction id ``xid`` (a transaction in progress,
    hence within 2**31 of the 64-bit id ``near``)."""
    full = (near & ~0xFFFFFFFF) | xid
    if full - near > 1 << 31:
        full -= 1 << 32
    elif near - full > 1 << 31:
        full += 1 << 32
    return full


@compiles(Key, "postgresql")
def _compile_key(type_: Key, compiler: TypeCompiler, **kw: object) -> str:
    """Ids compare and sort byte for byte (as on SQLite), whatever the database locale."""
    return f'VARCHAR({type_.length}) COLLATE "C"'


class PostgresDialect(Dialect):
    name: ClassVar[str] = "postgresql"

    dense_positions: ClassVar[bool] = False
    autocommit_reads: ClassVar[bool] = True
    # Without statistics yet, its plan for the one-row-per-event read filtered every
    # item of the branch for each event: the per-item read is the fast one here.
    reads_item_arrays: ClassVar[bool] = False

    def advance_head(
        self,
        conn: Connection,
        count: int,
        stream: Mapping[str, Any] | None = None,
    ) -> tuple[int, int]:
        if count > MAX_EVENTS_PER_TRANSACTION:
            raise InvalidArgumentError(
                f"at most {MAX_EVENTS_PER_TRANSACTION:,} events per append on PostgreSQL"
            )
        if stream is None:
            return self.reserve_positions(conn, count)
        row = _RESERVE_AND_STREAM.first(conn, {"count": count, **stream})
        if row is None:
            raise SchemaError("the head row of convstore_head is missing")
        return int(row[0]), int(row[1])

    def reserve_positions(self, conn: Connection, count: int) -> tuple[int, int]:
        row = _RESERVE.first(conn, {"count": count})
        if row is None:
            raise SchemaError("the head row of convstore_head is missing")
        return int(row[0]), int(row[1])

    def lock_streams(self, conn: Connection, stream_ids: Iterable[str]) -> None:
        """Take the advisory lock of each stream (see the module docstring): it assigns
        no transaction id, so the transaction must not have one yet (a write, or a row
        lock, before this would take it while other writers of the stream still run)."""
        keys = sorted({stream_lock_key(sid) for sid in stream_ids})
        if len(keys) == 1:
            _LOCK_STREAM.execute(conn, {"key": keys[0]})
        elif keys:
            _LOCK_STREAMS.execute(conn, {"keys": keys})

    def lock_log(self, conn: Connection) -> None:
        _LOCK_LOG.execute(conn)

    def begin_snapshot(self, conn: Connection) -> None:
        conn.execute(text("SET TRANSACTION READ ONLY"))  # (REPEATABLE READ, READ ONLY)

    def read_horizon(self, conn: Connection) -> int:
        row = _IN_PROGRESS.first(conn)
        if row is None:
            raise SchemaError("no snapshot")  # a SELECT without FROM always has a row
        next_id, oldest, running, prepared, hidden, isolation, standby, offset = row
        if offset is None:
            raise SchemaError("the head row of convstore_head is missing")
        # An append that commits later used this offset or a larger one: one raised
        # since waited for every append holding the old one (align_positions).
        if hidden or isolation != "read committed" or standby:
            # Sessions of another role, whose ids we may not read; a snapshot taken now
            # for the whole transaction; or a standby, whose sessions are not the
            # primary's writers: the oldest transaction in progress in the cluster
            # (every id below it has ended, and it only grows).
            return (int(oldest) + int(offset)) << POSITION_SHIFT
        lowest = int(next_id)
        for xid in (*running, *prepared):  # 32-bit ids: place each in next_id's epoch
            lowest = min(lowest, _full_xid(int(xid), int(next_id)))
        return (lowest + int(offset)) << POSITION_SHIFT

    def last_position(self, conn: Connection, *, locked: bool = False) -> int:
        # Under lock_log no append of this database is in flight: every event counts.
        if locked:
            return int(_LAST_COMMITTED.scalar(conn))
        return int(_LAST_READABLE.scalar(conn, {"bound": self.read_horizon(conn)}))

    def announce(self, conn: Connection, stream_id: str) -> None:
        # A statement of its own, delivered by the server when (if) the transaction
        # commits. Its cost (docs/subscriptions.md): one round trip, and commits of
        # transactions that notify are serialised by the server's notification queue.
        _ANNOUNCE.execute(conn, {"sid": stream_id})

    def change_signal(
        self, engine: AsyncEngine, stream_id: str | None, *, listen: bool
    ) -> ChangeSignal:
        return ListenSignal(engine, stream_id) if listen else ChangeSignal()

    def migrate_log(self, conn: Connection, found: int) -> None:
        if found < 4:
            # Until revision 3 the head row's position was the last position handed out
            # (1, 2, 3 …), and revision 3 left it there unused; from revision 4 on it is
            # the transaction-id offset, which starts at 0. A log whose positions lie
            # above the transaction ids then gets an offset from align_positions.
            _SET_OFFSET.execute(conn, {"offset": 0})

    def align_positions(self, conn: Connection) -> None:
        """Raise the transaction-id offset if the log holds positions at or above
        those new transactions would take: a log restored (``pg_dump``) into a cluster
        whose transaction counter is behind its source's.

        Under the head row's exclusive lock (:meth:`lock_log`), which waits for the
        appends in flight (each holds the row ``FOR SHARE`` from the statement that read
        the old offset until it commits) and holds new ones back until the new offset
        is committed: no append ever writes with the old offset after the new one.
        The new offset puts even the oldest transaction in progress (which may append
        after the bump with its older id) above every stored position."""
        highest, next_id, _, offset, read_only = self._alignment(conn)
        if highest < next_id + offset:
            return  # the normal case: one statement, no lock
        if read_only:  # a standby, or a read-only connection: cannot raise it here
            log.warning(
                "the log's positions are ahead of this PostgreSQL cluster's transaction "
                "ids (restored from another cluster?): open it once on a read-write "
                "connection, which raises the transaction-id offset"
            )
            return
        self.lock_log(conn)
        highest, next_id, oldest, offset, _ = self._alignment(conn)
        if highest < next_id + offset:
            return  # raised meanwhile by another store
        raised = highest + 1 - oldest
        _SET_OFFSET.execute(conn, {"offset": raised})
        log.warning(
            "the log's positions are ahead of this PostgreSQL cluster's transaction ids "
            "(restored from another cluster?): transaction-id offset raised from %d to %d, "
            "so new events follow the stored ones",
            offset,
            raised,
        )

    @staticmethod
    def _alignment(conn: Connection) -> tuple[int, int, int, int, bool]:
        row = _ALIGNMENT.first(conn)
        if row is None or row[3] is None:
            raise SchemaError("the head row of convstore_head is missing")
        highest, next_id, oldest, offset, read_only = row
        return int(highest), int(next_id), int(oldest), int(offset), bool(read_only)

    @contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        yield  # released when the transaction ends

    def session_setup(self, timeouts: Timeouts, conn: Any) -> list[str]:
        statements = []
        if timeouts.lock_timeout is not None:
            statements.append(f"SET lock_timeout = '{round(timeouts.lock_timeout * 1000)}ms'")
        if timeouts.idle_in_transaction is not None:
            ms = round(timeouts.idle_in_transaction * 1000)
            statements.append(f"SET idle_in_transaction_session_timeout = '{ms}ms'")
        return statements

    def pooled_connect_args(self) -> dict[str, Any]:
        # asyncpg names the statements it prepares and caches them per connection, and
        # so does SQLAlchemy's dialect: behind PgBouncer's transaction mode a statement
        # prepared on one server connection is then missing (or its name taken) on the
        # next. Without both caches every statement is unnamed and parsed again in the
        # message that runs it (asyncpg does that when its cache is off), so it lives
        # and dies with its own round trip.
        return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}

    def transaction_setup(self, timeouts: Timeouts) -> Callable[[Connection], None] | None:
        settings = {
            "lock_timeout": timeouts.lock_timeout,
            "idle_in_transaction_session_timeout": timeouts.idle_in_transaction,
        }
        chosen = {name: seconds for name, seconds in settings.items() if seconds is not None}
        if not chosen:
            return None
        # set_config(..., true) is SET LOCAL: it ends with the transaction, so the server
        # connection goes back to the pooler as it came.
        statement = Prepared(
            text("SELECT " + ", ".join(f"set_config('{name}', :{name}, true)" for name in chosen))
        )
        values = {name: f"{round(seconds * 1000)}ms" for name, seconds in chosen.items()}
        return lambda conn: statement.execute(conn, values)

    def check_read_replica(self) -> None:
        pass

    def write_position(self, conn: Connection) -> int:
        return int(_WAL_INSERTED.scalar(conn))

    def replayed(self, conn: Connection, position: int) -> bool:
        return bool(_WAL_REPLAYED.scalar(conn, {"lsn": position}))

    def max_value_bytes(self, conn: Connection) -> int | None:
        return _MAX_FIELD_BYTES

    limit_name: ClassVar[str] = "PostgreSQL's largest field (1 GB)"

    def driver_error(self, error: Exception) -> type[ConvstoreError] | None:
        asyncpg = sys.modules.get("asyncpg")  # whoever raised one has imported it
        if asyncpg is None:
            return None
        if isinstance(error, asyncpg.PostgresError):
            return self.classify(error)
        if isinstance(error, asyncpg.InterfaceError):
            # SQLAlchemy's set-up of a new connection (its type codecs) talks to asyncpg
            # directly: the server ended the connection it had just opened.
            return ConnectionLostError
        return None

    def classify(self, error: BaseException) -> type[ConvstoreError]:
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if not isinstance(code, str):
            return OperationalError
        return _BY_SQLSTATE.get(code) or _BY_CLASS.get(code[:2]) or PersistenceError


class ListenSignal(ChangeSignal):
    """Woken by the appends' ``NOTIFY`` (:meth:`PostgresDialect.announce`) of its
    stream (``stream_id`` None: of any), through the :class:`_Listener` of its engine:
    one connection of the engine's pool kept for ``LISTEN`` while any signal of that
    engine is open (a hundred live subscribers cost one connection, not a hundred).

    ``LISTEN`` needs a session of its own on the server: behind a pooler in
    transaction mode (PgBouncer's ``pool_mode = transaction``) notifications never
    arrive, and the reader's poll does all the work. A connection that cannot listen,
    or that is lost, is logged; the listener listens again (at most once per wait) and
    polling covers the meantime.
    """

    default_poll_interval: ClassVar[float] = 1.0

    def __init__(self, engine: AsyncEngine, stream_id: str | None) -> None:
        super().__init__()
        self._engine = engine
        self.stream_id = stream_id
        self._listener: _Listener | None = None

    async def open(self) -> None:
        await super().open()
        self._listener = _Listener.of(self._engine)
        await self._listener.add(self)

    async def wait(self, mark: Any, seconds: float) -> bool:
        if self._listener is not None:
            await self._listener.ensure()
        return await super().wait(mark, seconds)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.remove(self)


class _Listener:
    """One ``LISTEN`` connection of an engine in one event loop, shared by its signals."""

    _open: ClassVar[weakref.WeakKeyDictionary[Any, dict[Any, _Listener]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._signals: set[ListenSignal] = set()
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Future[None]] = set()  # lost connections being dropped

    @classmethod
    def of(cls, engine: AsyncEngine) -> _Listener:
        loop = asyncio.get_running_loop()
        by_loop = cls._open.setdefault(engine.sync_engine, {})
        listener = by_loop.get(loop)
        if listener is None:
            listener = by_loop[loop] = cls(engine)
        return listener

    async def add(self, signal: ListenSignal) -> None:
        self._signals.add(signal)
        await self.ensure()

    async def remove(self, signal: ListenSignal) -> None:
        self._signals.discard(signal)
        if not self._signals:
            async with self._lock:
                await self._release()
            by_loop = self._open.get(self._engine.sync_engine, {})
            if by_loop.get(asyncio.get_running_loop()) is self:
                del by_loop[asyncio.get_running_loop()]

    async def ensure(self) -> None:
        """Listen, unless listening already (or nobody is interested any more)."""
        if self._conn is not None or not self._signals:
            return
        async with self._lock:
            if self._conn is None and self._signals:
                await self._listen()

    async def _listen(self) -> None:
        try:
            conn = await self._engine.connect()
        except Exception as error:
            log.warning("cannot LISTEN for new events (polling instead): %s", error)
            return
        try:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            await driver.add_listener(CHANNEL, self._notified)
            driver.add_termination_listener(self._terminated)
        except Exception as error:
            log.warning("cannot LISTEN for new events (polling instead): %s", error)
            await _discard(conn)
            return
        self._conn, self._driver = conn, driver
        for signal in list(self._signals):  # appended while nobody listened: read now
            signal.poke()

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        for signal in list(self._signals):
            if signal.stream_id is None or signal.stream_id == payload:
                signal.poke()

    def _terminated(self, connection: Any) -> None:
        log.warning("the LISTEN connection for new events was lost (polling meanwhile)")
        conn, self._conn = self._conn, None
        self._driver = None
        if conn is not None:
            closing = asyncio.ensure_future(_discard(conn))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        for signal in list(self._signals):
            signal.poke()

    async def _release(self) -> None:
        conn, driver = self._conn, self._driver
        self._conn = self._driver = None
        if conn is None:
            return
        try:
            driver.remove_termination_listener(self._terminated)
            if not driver.is_closed():
                await driver.remove_listener(CHANNEL, self._notified)
            await conn.close()
        except Exception as error:  # a connection that broke meanwhile: drop it
            log.debug("discarding the LISTEN connection: %s", error)
            await _discard(conn)


async def _discard(conn: AsyncConnection) -> None:
    """Give a connection back to nobody: invalidate it, then close it."""
    try:
        await conn.invalidate()
        await conn.close()
    except Exception as error:
        log.debug("closing a broken connection: %s", error)

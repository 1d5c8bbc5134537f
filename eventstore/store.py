"""The event store: append to and read from the log.

:class:`EventStore` is a facade over parts that each do one job, each handed the
runner, dialect and live projection set it needs:

* :class:`~eventstore.transactions.Transactions` runs transaction functions and
  retries what is safe to retry;
* :class:`~eventstore.setup.LogSetup` creates, migrates and checks the tables and keeps
  the database's live projection set;
* :class:`~eventstore.writer.StreamWriter` appends (plain, together, decided);
* :mod:`eventstore.queries` reads; :mod:`eventstore.imports` writes imported events;
  :mod:`eventstore.removal` removes whole streams, leaving tombstones.

Each public method owns its transaction; the SQL lives in small functions of a
synchronous connection that a backend :class:`~eventstore.backends.Runner` executes
(see :mod:`eventstore.backends.base` for why).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Row
from sqlalchemy.ext.asyncio import AsyncEngine

from . import queries, registry, removal, subscribe
from .backends import open_runner
from .backends.base import T, Timeouts, TxFunction, run_blocking
from .backends.signals import ChangeSignal
from .checks import check_bounds, check_flag, check_integer, check_stream_id
from .errors import InvalidArgumentError, StoreClosedError, StoreInUseError
from .events import Event
from .imports import ImportedBatch, write_imported_tx
from .records import (
    ANY,
    AppendResult,
    ExpectedVersion,
    ImportedEvent,
    NewEvent,
    Projector,
    RecordedEvent,
    StreamInfo,
    recorded_from_row,
    to_micros,
)
from .removal import RemovedStream
from .replica import ReadReplica, ReplicaReads, marks_writes
from .setup import LogSetup, check_projectors
from .subscribe import DEFAULT_PAGE_SIZE, Subscription
from .transactions import Transactions
from .writer import StreamWriter

R = TypeVar("R")


class EventStore:
    """An append-only log of events in streams, on SQLite, PostgreSQL or MySQL/MariaDB.

    ``target`` is a SQLite path (``":memory:"`` for a private in-memory database), a
    SQLAlchemy URL, or an existing :class:`~sqlalchemy.ext.asyncio.AsyncEngine` (which
    the store uses but does not dispose).

    Every append keeps every live projection of the *database* current in its own
    transaction, whoever opened it (see :mod:`eventstore.registry`). ``projectors``
    are the ones this store adds to the database if it does not keep them yet (and
    then catches up from the log); by default, every projection installed with
    convstore (history, branches, usage).

    ``lock_timeout`` (seconds) bounds how long a write waits for another writer's lock
    before failing with :class:`~eventstore.errors.LockTimeoutError`;
    ``idle_in_transaction_timeout`` makes the server end a connection of ours that sits
    idle inside a transaction that long (a stalled client), releasing its locks
    (PostgreSQL and MariaDB). Both apply to SQLite and to engines the store creates from
    a URL; an ``AsyncEngine`` handed in keeps its own settings (docs/reliability.md).

    ``read_replica`` (PostgreSQL: a hot standby's URL or engine, or a
    :class:`~eventstore.replica.ReadReplica` to tune the waits) takes the reads that
    name their stream (``run(..., stream_id=...)``: a session's history) once it has
    replayed this store's writes to that stream; see :mod:`eventstore.replica`.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | AsyncEngine,
        *,
        create_tables: bool = True,
        projectors: Sequence[Projector] | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        lock_timeout: float | None = 10.0,
        idle_in_transaction_timeout: float | None = 5.0,
        read_replica: ReadReplica | str | AsyncEngine | None = None,
    ) -> None:
        check_flag("create_tables", create_tables)
        requested = check_projectors(projectors)  # before anything is opened
        timeouts = Timeouts(lock_timeout, idle_in_transaction_timeout)
        self._runner = open_runner(target, engine_kwargs=engine_kwargs, timeouts=timeouts)
        self._dialect = self._runner.dialect
        self._replica: ReplicaReads | None = None
        if read_replica is not None:
            if not isinstance(read_replica, ReadReplica):
                read_replica = ReadReplica(read_replica)
            try:
                self._replica = ReplicaReads(read_replica, self._runner)
            except BaseException:
                self._closed = True  # it has opened no connection yet: nothing to warn of
                raise
        self._transactions = Transactions(self._runner)
        self._setup = LogSetup(
            self._runner,
            self._transactions,
            create_tables=create_tables,
            requested=registry.default_projectors() if requested is None else requested,
        )
        self._writer = StreamWriter(self._runner, self._transactions, self._setup)
        self._closed = False
        self._holders = 0

    # -- lifecycle -------------------------------------------------------------------

    @property
    def dialect_name(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql``."""
        return self._dialect.name

    @property
    def slices_items(self) -> bool:
        """Whether this database reads a few items fastest one row per item, each cut
        out of its event's payload by the database (the dialect's ``slices_items``):
        then a short history is read whole that way, on the caller's thread."""
        return self._dialect.slices_items

    @property
    def projectors(self) -> tuple[Projector, ...]:
        """The projections every append keeps current (the database's live set, once
        the store has opened it; before that, the ones it was asked to keep)."""
        return self._setup.projectors

    def keep(self, projectors: Sequence[Projector]) -> None:
        """Also keep ``projectors``: the next operation adds any the database does not
        keep yet (and catches it up from the log). For a session class that needs a
        projection on a store another session opened (e.g. one shared SQLite store)."""
        self._setup.keep(check_projectors(projectors) or ())

    @property
    def dense_positions(self) -> bool:
        """Whether positions are 1, 2, 3 … without gaps (SQLite, MariaDB/MySQL). On
        PostgreSQL they are unique and increase in reading order, with gaps (see
        :mod:`eventstore.backends.postgres`). On every backend a reader resuming after
        the last position it read never skips an event."""
        return self._dialect.dense_positions

    @property
    def engine(self) -> AsyncEngine:
        """An :class:`AsyncEngine` on this store's database, to inspect it or run your own
        SQL (on SQLite, an aiosqlite engine on the same database, made on first use)."""
        return self._runner.engine

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def read_routing(self) -> ReplicaReads | None:
        """Where reads that name their stream go (None: no read replica)."""
        return self._replica

    @property
    def pooler(self) -> str | None:
        """``"transaction"`` when the store's engine was made from a URL with
        ``?pooler=transaction`` (a connection pooler such as PgBouncer in transaction
        mode: no session state lasts beyond one transaction, so nothing may rely on
        ``LISTEN`` or session settings); None for a direct connection."""
        return self._runner.pooler

    async def close(self) -> None:
        """Release connections (and the engine, if the store created it). Idempotent.

        A store shared by open sessions (:meth:`share`) refuses with
        :class:`StoreInUseError`: closing it would break every other session on it.
        """
        if self._closed:
            return
        if self._holders:
            raise StoreInUseError(
                f"this store is shared by {self._holders} open session(s): close them "
                "instead (the store closes with the last)"
            )
        self._closed = True
        self._setup.close()
        if self._replica is not None:
            await self._replica.close()
        await self._runner.close()

    def close_blocking(self) -> None:
        """:meth:`close` from synchronous code, waiting on the calling thread (SQLite's
        connections are closed there; on a server, on a thread of its own). For what
        has no event loop to await in: a timer, process exit, an explicit release."""
        if self._closed:
            return
        if self._holders:
            raise StoreInUseError(
                f"this store is shared by {self._holders} open session(s): close them first"
            )
        self._closed = True
        self._setup.close()
        if self._replica is not None:
            replica = self._replica
            run_blocking(replica.close)
        self._runner.close_blocking()

    def schema_mark(self) -> object | None:
        """A mark of the database's schema that any process's change to a table changes,
        read at once on the calling thread (SQLite: its schema version); None where it
        cannot be read so cheaply. With :meth:`recheck`, for a store kept open while
        nothing used it."""
        return None if self._closed else self._runner.schema_mark()

    def recheck(self) -> None:
        """Check the tables and the live projection set again before the next operation
        (one quick read), as a new store on the database would."""
        self._setup.forget()

    def share(self) -> Self:
        """Count one more holder (a session sharing this store); return the store."""
        self._check_open()
        self._holders += 1
        return self

    def unshare(self) -> bool:
        """Count one holder less; True when none is left (the caller then closes)."""
        self._holders = max(0, self._holders - 1)
        return self._holders == 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None and runner.owns_engine and not self._closed:
            warnings.warn(
                f"EventStore on {runner.engine.url.render_as_string()!r} was never closed; "
                "call 'await store.close()' or use 'async with'",
                ResourceWarning,
                stacklevel=2,
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("this event store is closed")

    async def run(
        self,
        fn: TxFunction[T],
        *,
        write: bool = False,
        quick: bool = False,
        stream_id: str | None = None,
    ) -> T:
        """Run ``fn(connection)`` in one transaction, retrying transient failures.

        For projections and sessions: ``fn`` must be safe to run again (reads, or
        writes whose effect is idempotent) because a deadlock or busy database retries it.
        ``quick`` promises a short, bounded transaction, which SQLite may then run without
        a thread handoff (see :class:`~eventstore.backends.sqlite.ThreadRunner`).
        A read that names the one ``stream_id`` it reads may run on the store's read
        replica, once that has this store's writes to the stream (eventstore/replica.py).
        """
        self._check_open()
        await self._setup.ensure()
        if stream_id is not None and self._replica is not None and not write:
            return await self._replica.run(
                fn,
                stream_id,
                lambda f: self._transactions.run(f, write=False, quick=quick),
                quick=quick,
            )
        return await self._transactions.run(fn, write=write, quick=quick)

    # -- schema ----------------------------------------------------------------------

    async def ensure_tables(self) -> None:
        """Create the tables (``create_tables=True``) or check they exist and match;
        add this store's projections to the database and catch up any that are behind."""
        await self._setup.ensure()

    async def catch_up(
        self,
        projectors: Sequence[Projector],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Replay the log into each of ``projectors`` that is behind and make it live.

        Appends go on meanwhile (only the last batch holds the log's lock); an
        interrupted catch-up resumes where it stopped the next time a store opens
        the database.
        """
        self._check_open()
        await self._setup.catch_up(check_projectors(projectors) or (), progress)

    # -- writing ---------------------------------------------------------------------

    # append and append_decided hand back the writer's coroutine (marks_writes awaits
    # it): a pass-through, without a coroutine of its own on the hot path.

    @marks_writes
    def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion = ANY,
        on_new_stream: Sequence[Event | NewEvent] = (),
    ) -> Awaitable[AppendResult]:
        """Append ``events`` to a stream atomically and return where they landed.

        ``expected_version`` is the version the stream must be at (0 or ``"no stream"``
        for a new stream, ``"any"`` for no check); a mismatch raises
        :class:`ConcurrencyError`. An append whose event ids are already stored in the
        stream is a no-op that returns the original result. ``on_new_stream`` events
        are written before ``events`` only when the stream does not exist yet.

        Appends with ``"any"`` that this store receives for one stream while another
        is being written there are written together, in the order they came, in one
        transaction (each caller still gets its own events and result; see
        :mod:`eventstore.coalesce`).
        """
        self._check_open()
        return self._writer.append(stream_id, events, expected_version, on_new_stream)

    @marks_writes
    def append_decided(
        self,
        stream_id: str,
        decide: Callable[[Connection, int], tuple[Sequence[Event], R] | None],
        *,
        on_new_stream: Sequence[Event | NewEvent] = (),
    ) -> Awaitable[tuple[AppendResult, R] | None]:
        """Append what ``decide`` returns, deciding while holding the stream's lock.

        ``decide(connection, version)`` runs inside the append transaction after the
        stream is locked, so what it reads (e.g. a projection) cannot change before its
        events are written: ``(events, value)`` appends ``events`` and returns
        ``(result, value)``; ``None`` appends nothing and returns None. It may run more
        than once (a deadlock is retried), so it must only read.
        """
        self._check_open()
        return self._writer.append_decided(stream_id, decide, on_new_stream)

    async def write_imported(self, events: Sequence[ImportedEvent]) -> ImportedBatch:
        """Write events recorded in another log (an export), in one transaction: each
        continues its stream's chain (its hash must verify), gets a new position at the
        end of the log, and is applied to the live projections; one the log holds
        already is skipped, one that conflicts with it is refused (IntegrityError,
        nothing of the batch written). See :mod:`eventstore.imports`."""
        self._check_open()
        dialect, setup = self._dialect, self._setup
        return await self.run(
            lambda conn: write_imported_tx(conn, dialect, setup.projectors, events), write=True
        )

    async def remove_streams(
        self, stream_ids: Iterable[str], *, reason: str, idle_before: datetime | None = None
    ) -> list[RemovedStream]:
        """Remove whole streams (retention, deletion; see :mod:`eventstore.removal`),
        each in a transaction of its own, leaving a tombstone that records ``reason``.
        Unknown streams, and with ``idle_before`` streams written to since, are kept.
        IntegrityError (nothing removed) for a stream whose log does not verify."""
        self._check_open()
        await self.run(removal.ensure_tombstones_tx, write=True)
        before = None if idle_before is None else to_micros(idle_before)
        dialect, setup = self._dialect, self._setup

        def remove_tx(conn: Connection, stream_id: str) -> RemovedStream | None:
            return removal.remove_stream_tx(
                conn,
                dialect,
                setup.projectors,
                stream_id=stream_id,
                reason=reason,
                idle_before=before,
            )

        removed = []
        for stream_id in stream_ids:
            done = await self.run(partial(remove_tx, stream_id=stream_id), write=True)
            if done is not None:
                removed.append(done)
        return removed

    # -- reading ---------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        *,
        after: int | None = None,
        upto: int | None = None,
        limit: int | None = None,
        desc: bool = False,
    ) -> list[RecordedEvent]:
        """Events of one stream by version: ``after`` < version <= ``upto``."""
        check_stream_id(stream_id)
        check_bounds(after=after, upto=upto, limit=limit)
        query = queries.stream_query(stream_id, after=after, upto=upto, limit=limit, desc=desc)
        rows = await self.run(lambda conn: conn.execute(query).all())
        return [recorded_from_row(row) for row in rows]

    async def read_all(
        self, *, after_position: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of every stream in position (commit) order, after ``after_position``."""
        check_bounds(after=after_position, limit=limit)
        rows = await self.run(
            partial(
                queries.read_all_tx,
                dialect=self._dialect,
                after_position=after_position,
                limit=limit,
            )
        )
        return [recorded_from_row(row) for row in rows]

    def subscribe(
        self,
        *,
        after_position: int = 0,
        page_size: int = DEFAULT_PAGE_SIZE,
        poll_interval: float | None = None,
        listen: bool = True,
    ) -> Subscription:
        """Every event appended to any stream after ``after_position``, as an async
        iterator that waits for new ones: each once, in position (commit) order, none
        skipped, read ``page_size`` at a time (:mod:`eventstore.subscribe`,
        docs/subscriptions.md). Resume with the position of the last event handled.
        ``poll_interval``: seconds between reads when nothing wakes it (default: the
        backend's); ``listen=False``: no PostgreSQL ``LISTEN``, polling alone."""
        return subscribe.follow(
            self,
            None,
            after=after_position,
            page_size=page_size,
            poll_interval=poll_interval,
            listen=listen,
        )

    def subscribe_stream(
        self,
        stream_id: str,
        *,
        after: int = 0,
        page_size: int = DEFAULT_PAGE_SIZE,
        poll_interval: float | None = None,
        listen: bool = True,
    ) -> Subscription:
        """The events of one stream after version ``after``, as :meth:`subscribe`
        follows the whole log: each once, in version order, none skipped; resume with
        the version of the last event handled. The stream need not exist yet."""
        return subscribe.follow(
            self,
            stream_id,
            after=after,
            page_size=page_size,
            poll_interval=poll_interval,
            listen=listen,
        )

    def change_signal(self, stream_id: str | None, *, listen: bool = True) -> ChangeSignal:
        """What wakes a reader of this database's log (for :mod:`eventstore.subscribe`)."""
        self._check_open()
        return self._runner.change_signal(stream_id, listen=listen)

    @property
    def database_key(self) -> object:
        """Identity of the database in this process (stores on one database share it)."""
        return self._runner.database_id

    async def list_streams(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[StreamInfo]:
        """Streams ordered by id, after the id ``after``."""
        check_bounds(limit=limit)
        query = queries.streams_query(after=after, limit=limit)
        rows = await self.run(lambda conn: conn.execute(query).all())
        return [queries.stream_info(row) for row in rows]

    async def idle_streams(self, before: datetime) -> list[StreamInfo]:
        """Streams last written before ``before`` (an aware datetime), ordered by id."""
        query = queries.idle_streams_query(to_micros(before))
        rows = await self.run(lambda conn: conn.execute(query).all())
        return [queries.stream_info(row) for row in rows]

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        """Version and timestamps of one stream, or None if it has no events."""
        check_stream_id(stream_id)
        query = queries.stream_row_query(stream_id)
        row = await self.run(lambda conn: conn.execute(query).first(), quick=True)
        return None if row is None else queries.stream_info(row)

    async def has_event(self, stream_id: str, event_type: str) -> bool:
        """Whether the stream holds an event of type ``event_type`` (e.g. ``"ItemsAdded"``)."""
        check_stream_id(stream_id)
        return await self.run(
            partial(queries.has_event_tx, stream_id=stream_id, event_type=event_type)
        )

    def lock_log(self, conn: Connection) -> None:
        """Inside a write transaction: make appends wait until it ends, and see every
        append committed before it (rebuild, verify, a projection's catch-up)."""
        self._dialect.lock_log(conn)

    def lock_streams(self, conn: Connection, stream_ids: Iterable[str]) -> None:
        """The first statement of a write transaction that writes events of these
        streams without :meth:`append` (an import): wait until no other transaction
        writes to them, so that each stream's positions follow its versions (on
        PostgreSQL a transaction's positions come from its transaction id, which must
        not be taken before this; see :mod:`eventstore.backends.postgres`)."""
        self._dialect.lock_streams(conn, stream_ids)

    def reserve_positions(self, conn: Connection, count: int) -> int:
        """Inside a write transaction: positions for ``count`` events written by the
        caller (an import), the way an append takes them; returns the last of them, the
        first being ``last - count + 1``."""
        if count <= 0:
            raise InvalidArgumentError(f"count must be an integer > 0, not {count!r}")
        last, _ = self._dialect.advance_head(conn, count)
        return last

    def committed_position(self, conn: Connection) -> int:
        """Inside a transaction that holds :meth:`lock_log`: the last position stored."""
        return self._dialect.last_position(conn, locked=True)

    async def head_position(self) -> int:
        """The last position a reader of :meth:`read_all` can see now (0: none). On
        SQLite and MariaDB positions are gapless, so it is also the log's length;
        on PostgreSQL positions have gaps (see :meth:`count_events`)."""
        return await self.run(self._dialect.last_position)

    async def scan_events(
        self,
        handle: Callable[[Sequence[Row[Any]]], None],
        *,
        stream_id: str | None = None,
        page_size: int = 1000,
    ) -> int:
        """Hand every stored event of the log (or of one stream), in position order, to
        ``handle``, ``page_size`` rows at a time, from one consistent snapshot (appends go
        on; an export). A row has the log's columns as attributes: the payload as stored,
        ``recorded_at`` in microseconds. Returns how many rows were handed."""
        check_integer("page_size", page_size, low=1)
        return await self.read_snapshot(
            partial(queries.scan_tx, handle=handle, stream_id=stream_id, page_size=page_size)
        )

    async def count_events(self) -> int:
        """How many events the log holds (for progress reports)."""
        return await self.run(lambda conn: int(conn.execute(queries.COUNT_EVENTS).scalar_one()))

    async def read_snapshot(self, fn: TxFunction[T]) -> T:
        """Run the read-only ``fn`` in one consistent snapshot of the database, on a
        connection of its own, so appends continue meanwhile (audit, verify, export;
        see :meth:`~eventstore.backends.base.Runner.snapshot`)."""
        self._check_open()
        await self._setup.ensure()
        return await self._runner.snapshot(fn)

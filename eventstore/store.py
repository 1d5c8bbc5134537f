"""The event store: append to and read from the log.

Each public method owns its transaction; the SQL lives in small ``_..._tx`` functions
of a synchronous connection that a backend :class:`~eventstore.backends.Runner`
executes (see :mod:`eventstore.backends.base` for why).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from sqlalchemy import (
    Connection,
    Row,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from . import registry, schema, subscribe
from .backends import open_runner
from .backends.base import AsyncEngineRunner, ChangeSignal, T, Timeouts, TxFunction
from .chain import GENESIS, chain_hash
from .coalesce import MAX_GROUP_BYTES, AppendQueue
from .codec import encode_event
from .errors import (
    ArgumentTypeError,
    CancelledAfterCommit,
    ConcurrencyError,
    ConnectionLostError,
    IntegrityError,
    InvalidArgumentError,
    OperationalError,
    PersistenceError,
    SchemaError,
    SerializationError,
    StoreClosedError,
    StoreInUseError,
    TransientError,
)
from .events import Event, event_type_of
from .prepared import Prepared
from .records import (
    ANY,
    NO_STREAM,
    AppendResult,
    ExpectedVersion,
    NewEvent,
    Projector,
    RecordedEvent,
    StreamInfo,
    recorded_from_row,
    to_datetime,
)
from .replica import ReadReplica, ReplicaReads, marks_writes
from .snapshot import run_snapshot
from .subscribe import DEFAULT_PAGE_SIZE, Subscription, wake_subscribers

R = TypeVar("R")

log = logging.getLogger("convstore.eventstore")
# A transaction taking longer than this is logged (at debug level).
SLOW_SECONDS = 0.5

MAX_STREAM_ID_LENGTH = 255
# The largest limit, version or position any read accepts: a signed 64-bit integer,
# what every backend's LIMIT and BIGINT columns hold (larger would overflow SQLite's
# driver and MariaDB's parser).
MAX_INTEGER = 2**63 - 1
_TRANSIENT_RETRIES = 12
# A server that ended our pooled connections, or does not take new ones (restarting,
# shutting down, a standby being promoted): retried with pauses growing from the first
# to the second, for this long in all; each retry takes a fresh connection (SQLAlchemy
# discards the pool's connections older than the one found dead).
_RECONNECT_PAUSES = (0.05, 1.0)
_RECONNECT_SECONDS = 10.0
# Appends of up to this many events count as quick (see EventStore.run).
_QUICK_BATCH = 100
# Streams whose head (version, hash) a store remembers from its own appends.
_REMEMBERED_HEADS = 4096
# on_new_stream tuples whose encoding a store remembers (one per open session).
_REMEMBERED_PREAMBLES = 1024


class _Unasked:
    """The size limit of a database not asked yet."""


_UNASKED = _Unasked()


@dataclass(slots=True)
class _DatabaseState:
    """What this process knows of one database: components whose tables are checked,
    and its live projections (valid while its generation is unchanged)."""

    components: set[tuple[str, int]] = field(default_factory=set)
    live: registry.LiveSet | None = None
    # Whether a transaction of this process has run there: a connection lost after
    # that is a server restarting (worth waiting for); before it, more likely a wrong
    # address, reported at once.
    reached: bool = False


# Per database: an engine, or a SQLite file's path (which a new store revalidates with
# one quick read, since the file may have been deleted and created again).
_state_by_engine: weakref.WeakKeyDictionary[Any, _DatabaseState] = weakref.WeakKeyDictionary()
_state_by_key: dict[object, _DatabaseState] = {}


def _database_state(key: object) -> _DatabaseState:
    try:
        return _state_by_engine.setdefault(key, _DatabaseState())
    except TypeError:  # not weakly referenceable (a SQLite file key)
        return _state_by_key.setdefault(key, _DatabaseState())


class _LiveSetChanged(Exception):
    """Raised inside an append whose idea of the live projections is stale."""


# The largest event payload each database accepts (absent: not asked yet).
_limits_by_engine: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()
_limits_by_key: dict[object, int | None] = {}


def _limits(key: object) -> MutableMapping[Any, int | None]:
    try:
        weakref.ref(key)
    except TypeError:  # not weakly referenceable (a SQLite path key)
        return _limits_by_key
    return _limits_by_engine


@dataclass(frozen=True, slots=True)
class _Encoded:
    event_id: str
    event_type: str
    schema_version: int
    payload: bytes
    event: Event


@dataclass(frozen=True, slots=True)
class _Append:
    """One caller's append with ``expected_version="any"`` (see eventstore/coalesce.py)."""

    stream_id: str
    batch: list[_Encoded]
    preamble: list[_Encoded]


def _split(result: AppendResult, sizes: Sequence[int]) -> list[AppendResult]:
    """The result of each of several appends written as one, of ``sizes`` events each, in
    order (versions and positions of one write are consecutive)."""
    results = []
    offset = 0
    for size in sizes:
        results.append(
            AppendResult(
                stream_id=result.stream_id,
                first_version=result.first_version + offset,
                last_version=result.first_version + offset + size - 1,
                first_position=result.first_position + offset,
                last_position=result.first_position + offset + size - 1,
            )
        )
        offset += size
    return results


def _encode(events: Iterable[Event | NewEvent]) -> list[_Encoded]:
    encoded = []
    for item in events:
        new = item if isinstance(item, NewEvent) else NewEvent(item)
        if not isinstance(new.event, Event):
            raise InvalidArgumentError(f"not an event: {new.event!r}")
        encoded.append(
            _Encoded(
                event_id=str(new.event_id),
                event_type=event_type_of(new.event),
                schema_version=type(new.event).schema_version,
                payload=encode_event(new.event),
                event=new.event,
            )
        )
    return encoded


def _check_expected(expected: object) -> None:
    if expected in (ANY, NO_STREAM):
        return
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise InvalidArgumentError(
            f"expected_version must be a version >= 0, 'any' or 'no stream', not {expected!r}"
        )


def _matches(expected: ExpectedVersion, current: int) -> bool:
    if expected == ANY:
        return True
    if expected == NO_STREAM:
        return current == 0
    return expected == current


# What a Projector has (eventstore.records.Projector), checked when a store is opened.
_PROJECTOR_PARTS = ("name", "schema_version", "metadata", "apply", "reset")


def _check_projectors(projectors: object) -> tuple[Projector, ...] | None:
    """``projectors`` as a tuple, or ArgumentTypeError if it is not a list of projectors."""
    if projectors is None:
        return None
    if isinstance(projectors, str | bytes | dict) or not isinstance(projectors, Iterable):
        raise ArgumentTypeError(
            f"projectors must be a list of projectors (e.g. [HistoryProjector()]), not "
            f"{projectors!r}; leave it out to keep every projection installed with convstore"
        )
    found = tuple(projectors)
    for n, projector in enumerate(found):
        missing = [part for part in _PROJECTOR_PARTS if not hasattr(projector, part)]
        if missing or not isinstance(getattr(projector, "name", None), str):
            raise ArgumentTypeError(
                f"projectors[{n}] is not a projector: {projector!r} has no "
                f"{', '.join(missing) or 'string name'} (see eventstore.Projector)"
            )
    return found


def check_stream_id(
    stream_id: object,
    *,
    what: str = "a stream id",
    error: type[InvalidArgumentError] = InvalidArgumentError,
) -> str:
    """Return ``stream_id`` if it can name a stream, else raise ``error`` (an
    InvalidArgumentError) saying why. Branch names and ids are checked by the same rules
    (``what`` names the argument in the message)."""
    if not isinstance(stream_id, str) or not stream_id:
        raise error(f"{what} must be a non-empty string, not {stream_id!r}")
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise error(
            f"{what} has at most {MAX_STREAM_ID_LENGTH} characters, not {len(stream_id)}: "
            "use a shorter one"
        )
    # The same ids on every backend: PostgreSQL cannot store NUL in text, and a lone
    # surrogate is not UTF-8 at all (SQLite and MariaDB fail to encode it).
    if "\x00" in stream_id:
        raise error(f"{what} cannot contain NUL ('\\x00'): remove it from {stream_id!r}")
    if not stream_id.isascii():
        try:
            stream_id.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise error(
                f"{what} must be valid Unicode text, not {stream_id!r} ({exc.reason}): a lone "
                "surrogate comes from bytes decoded with errors='surrogateescape'; decode "
                "them as UTF-8 instead"
            ) from exc
    return stream_id


_s = schema.streams
_STREAM = Prepared(select(_s.c.version, _s.c.head_hash).where(_s.c.stream_id == bindparam("sid")))
_STREAM_FOR_UPDATE = Prepared(
    select(_s.c.version, _s.c.head_hash).where(_s.c.stream_id == bindparam("sid")).with_for_update()
)
_INSERT_EVENTS = Prepared(insert(schema.events))
_INSERT_STREAM = Prepared(
    insert(_s).values(
        stream_id=bindparam("sid"),
        version=bindparam("new_version"),
        head_hash=bindparam("new_head_hash"),
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)


def _stream_exists(conn: Connection, stream_id: str) -> bool:
    """Whether the stream's row exists.

    An append that fails on a constraint was racing with the stream's creation only if
    it found no stream row and one exists now; the retry then finds (and locks) that row,
    so it cannot race again. Anything else (a stream row deleted under its events, a
    stray projection row, a constraint added by hand) fails the same way every time and
    is reported with its cause instead of being retried.
    """
    return _STREAM.first(conn, {"sid": stream_id}) is not None


_recorded = recorded_from_row


def _event_rows(
    stream_id: str,
    to_write: list[_Encoded],
    digests: list[str],
    current: int,
    now: int,
    first_position: int,
) -> tuple[list[dict[str, Any]], list[RecordedEvent]]:
    """The rows of ``convstore_events`` for ``to_write`` after stream version
    ``current``, and the same events as projections see them (``first_position`` 0:
    positions not taken yet, see EventStore._write_at_commit)."""
    recorded_at = to_datetime(now)
    rows: list[dict[str, Any]] = []
    recorded: list[RecordedEvent] = []
    for offset, (enc, digest) in enumerate(zip(to_write, digests, strict=True)):
        version = current + 1 + offset
        position = first_position + offset if first_position else 0
        rows.append(
            {
                "position": position,
                "stream_id": stream_id,
                "version": version,
                "event_id": enc.event_id,
                "event_type": enc.event_type,
                "schema_version": enc.schema_version,
                "payload": enc.payload,
                "recorded_at": now,
                "hash": digest,
            }
        )
        recorded.append(
            RecordedEvent(
                position=position,
                stream_id=stream_id,
                version=version,
                event_id=enc.event_id,
                event_type=enc.event_type,
                schema_version=enc.schema_version,
                event=enc.event,  # type: ignore[arg-type]
                recorded_at=recorded_at,
                hash=digest,
                payload=enc.payload,
            )
        )
    return rows, recorded


def _written(result: AppendResult | None) -> AppendResult:
    """The result of a write from a head read in its own transaction (never None: only
    a write from a remembered head can find the stream moved)."""
    assert result is not None
    return result


def _stream_info(row: Row[Any]) -> StreamInfo:
    return StreamInfo(
        stream_id=row.stream_id,
        version=row.version,
        head_hash=row.head_hash,
        created_at=to_datetime(row.created_at),
        updated_at=to_datetime(row.updated_at),
    )


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
        if not isinstance(create_tables, bool):
            raise ArgumentTypeError(f"create_tables must be True or False, not {create_tables!r}")
        requested = _check_projectors(projectors)  # before anything is opened
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
        self._requested = registry.default_projectors() if requested is None else requested
        for projector in self._requested:  # every store of this process can keep it now
            registry.register_projector(projector, replace=False)
        self._live: tuple[Projector, ...] = ()
        self._live_names: frozenset[str] = frozenset()
        self._unknown: tuple[str, ...] = ()
        self._generation = -1
        self._state = _database_state(self._runner.engine_key)
        # The live set last found to cover this store's tables and projections (while
        # the database state still holds it, ensure_tables has nothing to do).
        self._checked: registry.LiveSet | None = None
        # The largest payload the database accepts (see _check_sizes), once asked.
        self._size_limit: int | _Unasked | None = _UNASKED
        # Encoded on_new_stream events, by the identity of the tuple passed (a session
        # passes the same one with every append).
        self._preambles: dict[int, tuple[Sequence[Event | NewEvent], list[_Encoded]]] = {}
        # stream id -> (version, head hash) this store last wrote (see _remember_head)
        self._heads: dict[str, tuple[int, str]] = {}
        # Appends with expected_version "any" to a stream that another append of this
        # store is writing wait, and then run together (eventstore/coalesce.py).
        self._appends: AppendQueue[_Append, AppendResult] = AppendQueue(
            self._append_alone, self._append_together, max_bytes=self._group_bytes
        )
        self._create_tables = create_tables
        self._closed = False
        self._holders = 0
        self._components = {schema.SCHEMA_COMPONENT: schema.SCHEMA_VERSION} | {
            p.name: p.schema_version for p in self._requested
        }

    # -- lifecycle -------------------------------------------------------------------

    @property
    def dialect_name(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql``."""
        return self._dialect.name

    @property
    def projectors(self) -> tuple[Projector, ...]:
        """The projections every append keeps current (the database's live set, once
        the store has opened it; before that, the ones it was asked to keep)."""
        return self._live if self._generation >= 0 else self._requested

    def keep(self, projectors: Sequence[Projector]) -> None:
        """Also keep ``projectors``: the next operation adds any the database does not
        keep yet (and catches it up from the log). For a session class that needs a
        projection on a store another session opened (e.g. one shared SQLite store)."""
        have = {p.name for p in self._requested}
        added = tuple(p for p in projectors if p.name not in have)
        if not added:
            return
        for projector in added:
            registry.register_projector(projector, replace=False)
        self._requested += added
        self._components.update({p.name: p.schema_version for p in added})
        self._checked = None

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
        if self._replica is not None:
            await self._replica.close()
        await self._runner.close()

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
        if isinstance(runner, AsyncEngineRunner) and runner.owned and not self._closed:
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
        await self.ensure_tables()
        if stream_id is not None and self._replica is not None and not write:
            return await self._replica.run(
                fn, stream_id, lambda f: self._run(f, write=False, quick=quick), quick=quick
            )
        return await self._run(fn, write=write, quick=quick)

    async def _run(
        self, fn: TxFunction[T], *, write: bool, quick: bool = False, idempotent: bool = False
    ) -> T:
        """Run ``fn``, retrying deadlocks and busy errors, and a lost connection when
        that is safe: it broke before the commit (nothing was written), or ``fn`` is a
        read, or it is ``idempotent`` (an append: a second copy of its event ids is a
        no-op). A lock timeout is never retried: it is the bound the caller set.

        A lost connection is retried for up to ``_RECONNECT_SECONDS`` (a server
        restarting comes back meanwhile), once this process has reached the database
        (before that, a refused connection is more likely a wrong address: raised at
        once). Once an attempt may have committed, any error
        that ends the retries is a :class:`ConnectionLostError` with ``outcome_unknown``
        (the error that ended them is its cause): never an error that reads as "nothing
        was written"."""
        transient = 0
        lost_since: float | None = None
        pause = _RECONNECT_PAUSES[0]
        unknown = False  # an attempt broke while committing: it may have committed
        while True:
            started = time.perf_counter()
            try:
                result = await self._runner.run(fn, write=write, quick=quick)
            except TransientError as error:
                transient += 1
                if transient == _TRANSIENT_RETRIES:
                    log.warning("giving up after %d attempts: %s", transient, error)
                    _raise_outcome_unknown(unknown, error)
                    raise
                log.debug("retrying (attempt %d) after a transient error: %s", transient, error)
                await asyncio.sleep(random.uniform(0, 0.002 * 2**transient))
                continue
            except ConnectionLostError as error:
                if not self._state.reached or (error.outcome_unknown and write and not idempotent):
                    raise
                unknown = unknown or error.outcome_unknown
                now = time.monotonic()
                lost_since = now if lost_since is None else lost_since
                if now + pause - lost_since > _RECONNECT_SECONDS:
                    log.warning(
                        "giving up after %.1f s without a working connection: %s",
                        now - lost_since,
                        error,
                    )
                    _raise_outcome_unknown(unknown and not error.outcome_unknown, error)
                    raise
                log.debug("retrying in %.2f s after a lost connection: %s", pause, error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RECONNECT_PAUSES[1])
                continue
            except OperationalError as error:  # e.g. a lock timeout in a retry
                _raise_outcome_unknown(unknown, error)
                raise
            self._state.reached = True
            elapsed = time.perf_counter() - started
            if elapsed > SLOW_SECONDS:
                log.debug("slow %s transaction: %.3f s", "write" if write else "read", elapsed)
            if lost_since is not None:
                log.info(
                    "connection to the database working again after %.3f s",
                    time.monotonic() - lost_since,
                )
            if write:  # (a dictionary look-up when nobody subscribes)
                wake_subscribers(self._runner.database_id)
            return result

    # -- schema ----------------------------------------------------------------------

    async def ensure_tables(self) -> None:
        """Create the tables (``create_tables=True``) or check they exist and match;
        add this store's projections to the database and catch up any that are behind."""
        state = self._state
        live = state.live
        if live is not None and live is self._checked:  # nothing changed since the last call
            return
        if (
            live is not None
            and state.components.issuperset(self._components.items())
            and live.names.issuperset(p.name for p in self._requested)
        ):
            if live.generation == self._generation:
                self._checked = live
                return
            if not self._runner.revalidate or await self._still_valid(live):
                self._adopt(live)
                self._checked = live
                return
            state.components.clear()
            state.live = None
        self._check_open()
        try:
            behind = await self._prepare()
            state.components.update(self._components.items())
            if behind:
                await self._catch_up(behind)
            state.live = await self._run(registry.live_set, write=False)
        except CancelledAfterCommit:
            # What committed is this store's preparation, not the caller's change, which
            # has not started: for the caller, nothing was written.
            raise asyncio.CancelledError() from None
        self._adopt(state.live)

    async def _prepare(self) -> list[Projector]:
        """Run :meth:`_prepare_tx`. Another process preparing the same database at the
        same moment may insert the same registry rows first (on MySQL/MariaDB the schema
        lock is a named lock, released before the transaction commits): the duplicate
        means it is done, so preparing again finds it and goes on."""
        for attempt in range(3):
            try:
                return await self._run(self._prepare_tx, write=True)
            except IntegrityError:
                if attempt == 2:
                    raise
                log.debug("tables prepared by another process meanwhile; checking again")
        raise AssertionError("unreachable")

    async def _still_valid(self, live: registry.LiveSet) -> bool:
        try:
            return await self._run(registry.live_set, write=False, quick=True) == live
        except PersistenceError:  # e.g. the tables are gone: a new file at that path
            return False

    def _adopt(self, live: registry.LiveSet) -> None:
        self._live_names = live.names
        self._live, self._unknown = registry.resolve(live.names, self._requested)
        self._generation = live.generation

    def _check_known(self) -> None:
        """Before writing: every live projection must be one this process can keep."""
        if self._unknown:  # registered since? then keep it from now on
            self._live, self._unknown = registry.resolve(self._live_names, self._requested)
            if self._unknown:
                raise registry.unknown_error(self._unknown)

    async def _reload_live_set(self) -> None:
        state = _database_state(self._runner.engine_key)
        state.live = None
        await self.ensure_tables()

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
        await self.ensure_tables()
        await self._catch_up(projectors, progress=progress)
        await self._reload_live_set()

    async def _catch_up(
        self,
        projectors: Sequence[Projector],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:

        def replay(
            conn: Connection, targets: Sequence[Projector], after: int, limit: int | None
        ) -> int:
            # Batches (a limit) run while appends go on: they read only what no later
            # commit can precede. The last step (no limit) holds lock_log: all of it.
            bound = None if limit is None else self._dialect.read_horizon(conn)
            return replay_into(
                conn, targets, after=after, limit=limit, progress=progress, below=bound
            )

        async def in_write_tx(fn: Callable[[Connection], int]) -> int:
            return await self._run(fn, write=True)

        for projector in projectors:
            await registry.catch_up(in_write_tx, self.lock_log, replay, projector)

    def _prepare_tx(self, conn: Connection) -> list[Projector]:
        """Create, migrate and check the tables; return the known projections behind."""
        with self._dialect.schema_lock(conn):
            if self._create_tables:
                schema.metadata.create_all(conn)
                if conn.execute(select(schema.head.c.name)).first() is None:
                    conn.execute(insert(schema.head).values(name=schema.HEAD_ROW, position=0))
                if schema.SCHEMA_COMPONENT not in self._stored_versions(conn):
                    conn.execute(
                        insert(schema.schema_versions).values(
                            component=schema.SCHEMA_COMPONENT, version=schema.SCHEMA_VERSION
                        )
                    )
            self._check_log_schema(conn)
            self._dialect.align_positions(conn)
            tracked = registry.read_tracking(conn)
            stored = self._stored_versions(conn)
            for projector in self._requested:
                self._prepare_projection(conn, projector, tracked, stored)
            tracked = registry.read_tracking(conn)
            behind = [n for n, row in tracked.items() if not row.live]
            found, _ = registry.resolve(behind, self._requested)
            return list(found)

    def _prepare_projection(
        self,
        conn: Connection,
        projector: Projector,
        tracked: dict[str, registry.TrackingRow],
        stored: dict[str, int],
    ) -> None:
        """Add ``projector`` to the database, or rebuild tables of an older shape."""
        found = stored.get(projector.name)
        if found is not None and found > projector.schema_version:
            raise SchemaError(
                f"{projector.name!r} tables are at schema version {found}, newer than this "
                f"release understands ({projector.schema_version}): upgrade convstore"
            )
        current = found == projector.schema_version and projector.name in tracked
        if current:
            return
        if not self._create_tables:
            raise SchemaError(
                f"the tables of the {projector.name!r} projection "
                + ("do not exist" if found is None else f"are at schema version {found}")
                + f": {self._create_tables_fix()}"
            )
        # A projection is disposable: tables of an older shape are dropped and rebuilt
        # from the log (the catch-up that follows fills them).
        if found is not None:
            projector.metadata.drop_all(conn)
        projector.metadata.create_all(conn)
        sv = schema.schema_versions
        conn.execute(delete(sv).where(sv.c.component == projector.name))
        conn.execute(insert(sv).values(component=projector.name, version=projector.schema_version))
        if projector.name in tracked:
            registry.set_behind(conn, projector.name, 0)
        else:
            registry.add_projection(conn, projector)

    @staticmethod
    def _stored_versions(conn: Connection) -> dict[str, int]:
        sv = schema.schema_versions
        return {
            row.component: row.version for row in conn.execute(select(sv.c.component, sv.c.version))
        }

    def _create_tables_fix(self) -> str:
        """How to create missing tables, told apart for an engine the caller handed in:
        that is a long-lived application's engine, whose tables belong in its start-up."""
        if isinstance(self._runner, AsyncEngineRunner) and not self._runner.owned:
            return (
                "a web application creates (or upgrades) them once at start-up, in its lifespan: "
                "`await sessions.create_tables(engine)` (docs/fastapi.md); a script can "
                "pass create_tables=True instead, or run 'convstore DB init' first"
            )
        return "open it with create_tables=True (or run 'convstore DB init') first"

    def _check_log_schema(self, conn: Connection) -> None:
        if not inspect(conn).has_table(schema.schema_versions.name):
            raise SchemaError(
                f"the convstore tables do not exist in this database: {self._create_tables_fix()}"
            )
        found = self._stored_versions(conn).get(schema.SCHEMA_COMPONENT)
        version = schema.SCHEMA_VERSION
        if found is None:
            raise SchemaError("the convstore tables are incomplete: run 'convstore DB init'")
        if found > version:
            raise SchemaError(
                f"the log's tables are at schema version {found}, newer than this "
                f"release understands ({version}): upgrade convstore"
            )
        if found < version:
            if not self._create_tables:
                raise SchemaError(
                    f"the log's tables are at schema version {found} and need migrating to "
                    f"{version}: open with create_tables=True (or run 'convstore DB init')"
                )
            schema.migrate(conn, found)
            self._dialect.migrate_log(conn, found)
            sv = schema.schema_versions
            conn.execute(
                update(sv).where(sv.c.component == schema.SCHEMA_COMPONENT).values(version=version)
            )

    # -- writing ---------------------------------------------------------------------

    @marks_writes
    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: ExpectedVersion = ANY,
        on_new_stream: Sequence[Event | NewEvent] = (),
    ) -> AppendResult:
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
        check_stream_id(stream_id)
        _check_expected(expected_version)
        batch = _encode(events)
        if not batch:
            raise InvalidArgumentError("append needs at least one event")
        preamble = self._encode_preamble(on_new_stream)
        if len({e.event_id for e in batch + preamble}) != len(batch) + len(preamble):
            raise InvalidArgumentError("the events of one append need distinct event ids")
        await self.ensure_tables()
        self._check_known()
        await self._check_sizes(batch + preamble)
        work = _Append(stream_id, batch, preamble)
        if expected_version == ANY:
            size = sum(len(enc.payload) for enc in batch)
            return await self._appends.submit(stream_id, work, events=len(batch), size=size)
        return await self._append_alone(work, expected_version)

    async def _append_alone(
        self, work: _Append, expected_version: ExpectedVersion = ANY
    ) -> AppendResult:
        """Write one caller's append in a transaction of its own."""
        stream_id, batch, preamble = work.stream_id, work.batch, work.preamble
        raced = False
        while True:
            try:
                return await self._run(
                    lambda conn: self._append_tx(
                        conn, stream_id, batch, preamble, expected_version
                    ),
                    write=True,
                    quick=len(batch) <= _QUICK_BATCH,
                    idempotent=True,
                )
            except _LiveSetChanged:
                await self._reload_live_set()
                self._check_known()
                continue
            except IntegrityError:
                # These event ids are stored already (an idempotent retry), or a
                # concurrent writer created the stream first, or something else is wrong.
                original, exists = await self._run(
                    lambda conn: (
                        self._original_tx(conn, stream_id, batch),
                        _stream_exists(conn, stream_id),
                    ),
                    write=False,
                    quick=True,
                )
                if original is not None:
                    return original
                if raced or not exists:
                    raise  # not a creation race: the constraint's own error says why
                raced = True

    async def _append_together(self, works: list[_Append]) -> list[AppendResult]:
        """Write several callers' appends to one stream as one append, in order: the
        first one's ``on_new_stream`` starts a new stream (the others' would not be
        written after it either). Raises if nothing was written; then the queue runs
        each alone, so that an error (an idempotent retry, a creation race, a broken
        constraint) reaches only the caller it concerns."""
        stream_id, preamble = works[0].stream_id, works[0].preamble
        combined = [enc for work in works for enc in work.batch]
        sizes = [len(work.batch) for work in works]
        while True:
            try:
                result = await self._run(
                    lambda conn: self._append_tx(conn, stream_id, combined, preamble, ANY),
                    write=True,
                    quick=len(combined) <= _QUICK_BATCH,
                    idempotent=True,
                )
            except _LiveSetChanged:
                await self._reload_live_set()
                self._check_known()
                continue
            except CancelledAfterCommit as committed:
                raise CancelledAfterCommit(_split(committed.result, sizes)) from None
            return _split(result, sizes)

    def _group_bytes(self) -> int:
        """The most payload bytes one combined append carries: well inside the
        database's statement limit, once known (see _check_sizes)."""
        limit = self._size_limit
        if isinstance(limit, _Unasked) or limit is None:
            return MAX_GROUP_BYTES
        return min(MAX_GROUP_BYTES, limit // 2)

    @marks_writes
    async def append_decided(
        self,
        stream_id: str,
        decide: Callable[[Connection, int], tuple[Sequence[Event], R] | None],
        *,
        on_new_stream: Sequence[Event | NewEvent] = (),
    ) -> tuple[AppendResult, R] | None:
        """Append what ``decide`` returns, deciding while holding the stream's lock.

        ``decide(connection, version)`` runs inside the append transaction after the
        stream is locked, so what it reads (e.g. a projection) cannot change before its
        events are written: ``(events, value)`` appends ``events`` and returns
        ``(result, value)``; ``None`` appends nothing and returns None. It may run more
        than once (a deadlock is retried), so it must only read.
        """
        self._check_open()
        check_stream_id(stream_id)
        preamble = self._encode_preamble(on_new_stream)
        await self.ensure_tables()
        self._check_known()
        raced = False
        while True:
            try:
                return await self._run(
                    lambda conn: self._decided_tx(conn, stream_id, decide, preamble),
                    write=True,
                    quick=True,
                )
            except _LiveSetChanged:
                await self._reload_live_set()
                self._check_known()
                continue
            except IntegrityError:
                exists = await self._run(
                    lambda conn: _stream_exists(conn, stream_id), write=False, quick=True
                )
                if raced or not exists:
                    raise  # not a creation race: the constraint's own error says why
                raced = True  # raced with the stream's creation: decide again

    def _encode_preamble(self, events: Sequence[Event | NewEvent]) -> list[_Encoded]:
        """:func:`_encode` of ``on_new_stream``, remembered for a tuple of NewEvents
        (immutable, ids included: encoding it again would give the same bytes)."""
        if not events:
            return []
        if type(events) is not tuple or not all(type(e) is NewEvent for e in events):
            return _encode(events)
        found = self._preambles.get(id(events))
        if found is not None and found[0] is events:
            return found[1]
        encoded = _encode(events)
        if len(self._preambles) >= _REMEMBERED_PREAMBLES:
            self._preambles.clear()
        self._preambles[id(events)] = (events, encoded)
        return encoded

    async def _check_sizes(self, batch: list[_Encoded]) -> None:
        """Refuse, before writing, an event larger than the database accepts in one
        statement (MariaDB's max_allowed_packet would otherwise drop the connection)."""
        limit = self._size_limit
        if isinstance(limit, _Unasked):
            key = self._runner.engine_key
            known = _limits(key)
            if key in known:
                limit = known[key]
            else:
                limit = known[key] = await self._run(self._dialect.max_value_bytes, write=False)
            self._size_limit = limit
        if limit is None:
            return
        for enc in batch:
            size = self._dialect.wire_size(enc.payload)
            if size > limit:
                raise SerializationError(
                    f"this {enc.event_type} event takes {size:,} bytes as sent to "
                    f"{self._dialect.name}, over {self._dialect.limit_name} "
                    f"({limit:,} bytes): add fewer or smaller items per call"
                )

    def _decided_tx(
        self,
        conn: Connection,
        stream_id: str,
        decide: Callable[[Connection, int], tuple[Sequence[Event], R] | None],
        preamble: list[_Encoded],
    ) -> tuple[AppendResult, R] | None:
        self._dialect.lock_streams(conn, (stream_id,))  # first: see Dialect.lock_streams
        known = self._heads.get(stream_id)
        if known is not None:  # decide on the head this store wrote last, then confirm it
            decision = decide(conn, known[0])
            batch = [] if decision is None else _encode(decision[0])
            if batch:
                assert decision is not None
                done = self._write_tx(conn, stream_id, known, batch, preamble, True)
                if done is not None:
                    return done, decision[1]
            elif self._lock_stream(conn, stream_id) == known:
                return None  # nothing to append, decided on the stored version
        row = self._lock_stream(conn, stream_id)
        decision = decide(conn, row[0] if row is not None else 0)
        if decision is None:
            return None
        events, value = decision
        batch = _encode(events)
        if not batch:
            return None
        return _written(self._write_tx(conn, stream_id, row, batch, preamble)), value

    def _lock_stream(self, conn: Connection, stream_id: str) -> Any:
        """The stream's (version, head hash) row, locked until the transaction ends."""
        find_stream = _STREAM_FOR_UPDATE if self._dialect.lock_stream() else _STREAM
        return find_stream.first(conn, {"sid": stream_id})

    def _append_tx(
        self,
        conn: Connection,
        stream_id: str,
        batch: list[_Encoded],
        preamble: list[_Encoded],
        expected: ExpectedVersion,
    ) -> AppendResult:
        self._dialect.lock_streams(conn, (stream_id,))  # first: see Dialect.lock_streams
        known = self._heads.get(stream_id)
        if known is not None and _matches(expected, known[0]):
            done = self._write_tx(conn, stream_id, known, batch, preamble, True)
            if done is not None:
                return done
        row = self._lock_stream(conn, stream_id)
        current = row[0] if row is not None else 0
        if not _matches(expected, current):
            original = self._original_tx(conn, stream_id, batch)
            if original is not None:
                return original
            raise ConcurrencyError(stream_id, expected, current)
        return _written(self._write_tx(conn, stream_id, row, batch, preamble))

    def _write_tx(
        self,
        conn: Connection,
        stream_id: str,
        row: Any,
        batch: list[_Encoded],
        preamble: list[_Encoded],
        confirm: bool = False,
    ) -> AppendResult | None:
        """Write ``batch`` after the stream head ``row`` (None: a new stream, which gets
        ``preamble`` first). With ``confirm``, ``row`` is the head this store wrote last,
        not one read in this transaction: the stream's row is then advanced only if it
        still holds that head, and if it does not, nothing is written and None is
        returned (the caller reads the row and tries again)."""
        current = row[0] if row is not None else 0
        to_write = batch if row is not None else preamble + batch
        now = time.time_ns() // 1000
        # The chain does not depend on positions: hash first, so the stream's new head
        # can be written by the same statement that reserves the positions.
        digests: list[str] = []
        previous = row[1] if row is not None else GENESIS
        for offset, enc in enumerate(to_write):
            previous = chain_hash(
                previous,
                stream_id=stream_id,
                version=current + 1 + offset,
                event_id=enc.event_id,
                event_type=enc.event_type,
                schema_version=enc.schema_version,
                recorded_at=now,
                payload=enc.payload,
            )
            digests.append(previous)
        last_version = current + len(to_write)
        stream_values = {
            "sid": stream_id,
            "new_version": last_version,
            "new_head_hash": previous,
            "now": now,
        }
        if (
            not confirm
            and self._dialect.positions_at_commit(
                conn,
                (enc.payload for enc in to_write),  # (only MariaDB's hook reads them)
                None if isinstance(self._size_limit, _Unasked) else self._size_limit,
            )
            and not any(getattr(p, "reads_positions", True) for p in self._live)
        ):
            return self._write_at_commit(
                conn, stream_id, row is None, to_write, len(batch), digests, now, stream_values
            )
        if confirm:
            confirmed = {**stream_values, "old_version": current, "old_head_hash": row[1]}
            if not self._dialect.update_stream_from(conn, confirmed):
                return None
            last_position, generation = self._dialect.advance_head(conn, len(to_write))
        else:
            last_position, generation = self._dialect.advance_head(
                conn, len(to_write), stream=stream_values if row is not None else None
            )
        if generation != self._generation:
            raise _LiveSetChanged()
        if row is None:
            _INSERT_STREAM.execute(conn, stream_values)
        first_position = last_position - len(to_write) + 1
        rows, recorded = _event_rows(stream_id, to_write, digests, current, now, first_position)
        _INSERT_EVENTS.execute_many(conn, rows)
        self._dialect.announce(conn, stream_id)
        for projector in self._live:
            projector.apply(conn, recorded)
        if self._dialect.confirms_cached_heads:
            self._remember_head(stream_id, last_version, previous)
        return AppendResult(
            stream_id=stream_id,
            first_version=last_version - len(batch) + 1,
            last_version=last_version,
            first_position=last_position - len(batch) + 1,
            last_position=last_position,
        )

    def _write_at_commit(
        self,
        conn: Connection,
        stream_id: str,
        new_stream: bool,
        to_write: list[_Encoded],
        appended: int,
        digests: list[str],
        now: int,
        stream_values: dict[str, Any],
    ) -> AppendResult:
        """The rest of :meth:`_write_tx` where positions are taken at commit
        (:meth:`~eventstore.backends.base.Dialect.positions_at_commit`): apply the
        projections first (their events carry position 0), then write the stream's row
        and the events, number them and commit, in one statement. ``appended`` of
        ``to_write`` are the caller's events (before them: a new stream's preamble)."""
        last_version = int(stream_values["new_version"])
        current = last_version - len(to_write)
        rows, recorded = _event_rows(stream_id, to_write, digests, current, now, 0)
        for projector in self._live:
            projector.apply(conn, recorded)
        self._dialect.announce(conn, stream_id)
        last_position = self._dialect.commit_append(
            conn,
            rows=rows,
            stream=stream_values,
            new_stream=new_stream,
            generation=self._generation,
        )
        if last_position is None:
            raise _LiveSetChanged()
        return AppendResult(
            stream_id=stream_id,
            first_version=last_version - appended + 1,
            last_version=last_version,
            first_position=last_position - appended + 1,
            last_position=last_position,
        )

    def _remember_head(self, stream_id: str, version: int, head_hash: str) -> None:
        """Remember the head this store just wrote, for its next append to the stream.

        Written before the commit: if the transaction then rolls back, the next append
        finds the stream's row elsewhere than remembered and reads it (a remembered head
        is only ever a guess that the UPDATE confirms).
        """
        heads = self._heads
        heads.pop(stream_id, None)  # newest last: the oldest go first when full
        heads[stream_id] = (version, head_hash)
        if len(heads) > _REMEMBERED_HEADS:
            del heads[next(iter(heads))]

    @staticmethod
    def _original_tx(
        conn: Connection, stream_id: str, batch: list[_Encoded]
    ) -> AppendResult | None:
        """The result of an earlier append of exactly these event ids, if there was one."""
        e = schema.events
        ids = [enc.event_id for enc in batch]
        found = conn.execute(
            select(e.c.event_id, e.c.version, e.c.position)
            .where(e.c.stream_id == stream_id, e.c.event_id.in_(ids))
            .order_by(e.c.version)
        ).all()
        if not found:
            return None
        if [r.event_id for r in found] != ids:
            raise IntegrityError(
                f"stream {stream_id!r}: some of these event ids are stored already, "
                "but not as this exact append"
            )
        return AppendResult(
            stream_id=stream_id,
            first_version=found[0].version,
            last_version=found[-1].version,
            first_position=found[0].position,
            last_position=found[-1].position,
        )

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
        _check_bounds(after=after, upto=upto, limit=limit)
        e = schema.events
        query = select(e).where(e.c.stream_id == stream_id)
        if after is not None:
            query = query.where(e.c.version > after)
        if upto is not None:
            query = query.where(e.c.version <= upto)
        query = query.order_by(e.c.version.desc() if desc else e.c.version)
        if limit is not None:
            query = query.limit(limit)
        rows = await self.run(lambda conn: conn.execute(query).all())
        return [_recorded(row) for row in rows]

    async def read_all(
        self, *, after_position: int = 0, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Events of every stream in position (commit) order, after ``after_position``."""
        _check_bounds(after=after_position, limit=limit)
        e = schema.events
        query = select(e).where(e.c.position > after_position).order_by(e.c.position)
        if limit is not None:
            query = query.limit(limit)

        def read_tx(conn: Connection) -> Sequence[Row[Any]]:
            bound = self._dialect.read_horizon(conn)  # see backends/postgres.py
            if bound is None:
                return conn.execute(query).all()
            return conn.execute(query.where(e.c.position < bound)).all()

        rows = await self.run(read_tx)
        return [_recorded(row) for row in rows]

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
        return subscribe.follow_log(
            self,
            after_position=after_position,
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
        return subscribe.follow_stream(
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
        _check_bounds(limit=limit)
        s = schema.streams
        query = select(s).order_by(s.c.stream_id)
        if after is not None:
            query = query.where(s.c.stream_id > after)
        if limit is not None:
            query = query.limit(limit)
        rows = await self.run(lambda conn: conn.execute(query).all())
        return [_stream_info(row) for row in rows]

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        """Version and timestamps of one stream, or None if it has no events."""
        check_stream_id(stream_id)
        s = schema.streams
        row = await self.run(
            lambda conn: conn.execute(select(s).where(s.c.stream_id == stream_id)).first(),
            quick=True,
        )
        return None if row is None else _stream_info(row)

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

    async def count_events(self) -> int:
        """How many events the log holds (for progress reports)."""
        e = schema.events
        query = select(func.count()).select_from(e)
        return await self.run(lambda conn: int(conn.execute(query).scalar_one()))

    async def read_snapshot(self, fn: TxFunction[T]) -> T:
        """Run the read-only ``fn`` in one consistent snapshot of the database, on a
        connection of its own, so appends continue meanwhile (audit, verify, export;
        see :mod:`eventstore.snapshot`)."""
        self._check_open()
        await self.ensure_tables()
        return await run_snapshot(self._runner, fn)


def _raise_outcome_unknown(unknown: bool, error: Exception) -> None:
    """If an earlier attempt may have committed, raise that instead of ``error``."""
    if unknown:
        raise ConnectionLostError(
            f"{error} (after an earlier attempt lost its connection while committing: "
            "it may or may not have committed)",
            outcome_unknown=True,
        ) from error


def _check_bounds(**values: int | None) -> None:
    for name, value in values.items():
        if value is None:
            continue
        check_count(name, value)


def check_count(name: str, value: object) -> int:
    """``value`` if it is an integer from 0 to :data:`MAX_INTEGER`, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an integer >= 0, not {value!r}")
    if not 0 <= value <= MAX_INTEGER:
        raise InvalidArgumentError(
            f"{name} must be an integer from 0 to {MAX_INTEGER} (2**63 - 1), not {value!r}"
        )
    return value


def replay_into(
    conn: Connection,
    projectors: Sequence[Projector],
    *,
    after: int = 0,
    limit: int | None = None,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    below: int | None = None,
) -> int:
    """Apply the log after position ``after`` (at most ``limit`` events), in position
    order, to ``projectors``; return the last position applied (``after`` if none).

    Runs inside the caller's transaction; tracking rows are the caller's business.
    With ``below``, only positions below it are read (a backend's read horizon).
    """
    if not projectors:
        return after
    e = schema.events
    done = 0
    while limit is None or done < limit:
        size = batch_size if limit is None else min(batch_size, limit - done)
        query = select(e).where(e.c.position > after)
        if below is not None:
            query = query.where(e.c.position < below)
        rows = conn.execute(query.order_by(e.c.position).limit(size)).all()
        if not rows:
            break
        recorded = [_recorded(row) for row in rows]
        for projector in projectors:
            projector.apply(conn, recorded)
        after = recorded[-1].position
        done += len(recorded)
        if progress is not None:
            progress(len(recorded))
    return after

"""Appending to streams: the store's write paths and the chain they continue.

Each append locks its stream first (:meth:`~eventstore.backends.base.Dialect.lock_streams`,
then the stream's row), checks the expected version, hashes its events after the
stream's head (:func:`~eventstore.chain.chain_of`) and hands them to the dialect's
:meth:`~eventstore.backends.base.Dialect.write_batch`. Three paths share that step:

* a plain append, in a transaction of its own (``expected_version`` checked);
* appends with ``expected_version="any"`` that arrive for a stream while another is
  being written there, written together in one transaction (:mod:`eventstore.coalesce`);
* a decided append (:meth:`StreamWriter.append_decided`), whose events are chosen by a
  function that runs after the stream is locked.

Where one writer orders every write (SQLite's ``BEGIN IMMEDIATE``) an append may start
from the head its store wrote last, the stream row's UPDATE confirming it, instead of
reading the row (``confirms_cached_heads``). An append that fails on a constraint is
looked up by its event ids: all stored already, it returns the original result
(idempotent append); it raced with the stream's creation, it is retried once.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, select

from . import schema
from .backends.base import Dialect, Runner
from .batch import (
    STREAM,
    EncodedEvent,
    LiveSetChanged,
    StreamWrite,
    encode,
)
from .chain import GENESIS, chain_of
from .checks import check_expected_version, check_stream_id
from .coalesce import MAX_GROUP_BYTES, AppendQueue
from .errors import (
    CancelledAfterCommit,
    ConcurrencyError,
    IntegrityError,
    InvalidArgumentError,
    SerializationError,
)
from .events import Event
from .records import ANY, NO_STREAM, AppendResult, ExpectedVersion, NewEvent
from .setup import LogSetup
from .transactions import Transactions

R = TypeVar("R")

# Appends of up to this many events count as quick (see EventStore.run).
QUICK_BATCH = 100
# Streams whose head (version, hash) a store remembers from its own appends.
REMEMBERED_HEADS = 4096
# on_new_stream tuples whose encoding a store remembers (one per open session).
REMEMBERED_PREAMBLES = 1024


class _Unasked:
    """The size limit of a database not asked yet."""


_UNASKED = _Unasked()

# The largest event payload each database accepts (absent: not asked yet).
_limits_by_engine: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()
_limits_by_key: dict[object, int | None] = {}


def _limits(key: object) -> MutableMapping[Any, int | None]:
    """Where the size limit of the database ``key`` is kept."""
    try:
        weakref.ref(key)
    except TypeError:  # not weakly referenceable (a SQLite path key)
        return _limits_by_key
    return _limits_by_engine


@dataclass(frozen=True, slots=True)
class _Append:
    """One caller's append with ``expected_version="any"`` (see eventstore/coalesce.py)."""

    stream_id: str
    batch: list[EncodedEvent]
    preamble: list[EncodedEvent]


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


def _matches(expected: ExpectedVersion, current: int) -> bool:
    """Whether a stream at version ``current`` is at ``expected``."""
    if expected == ANY:
        return True
    if expected == NO_STREAM:
        return current == 0
    return expected == current


def _stream_exists(conn: Connection, stream_id: str) -> bool:
    """Whether the stream's row exists.

    An append that fails on a constraint was racing with the stream's creation only if
    it found no stream row and one exists now; the retry then finds (and locks) that row,
    so it cannot race again. Anything else (a stream row deleted under its events, a
    stray projection row, a constraint added by hand) fails the same way every time and
    is reported with its cause instead of being retried.
    """
    return STREAM.first(conn, {"sid": stream_id}) is not None


def _written(result: AppendResult | None) -> AppendResult:
    """The result of a write from a head read in its own transaction (never None: only
    a write from a remembered head can find the stream moved)."""
    assert result is not None
    return result


class StreamWriter:
    """The append paths of one store: handed its runner's dialect, the transactions
    to run them in and the live projection set (``setup``) each append keeps."""

    def __init__(self, runner: Runner, transactions: Transactions, setup: LogSetup) -> None:
        self._dialect: Dialect = runner.dialect
        self._engine_key = runner.engine_key
        self._transactions = transactions
        self._setup = setup
        # The largest payload the database accepts (see _check_sizes), once asked.
        self._size_limit: int | _Unasked | None = _UNASKED
        # Encoded on_new_stream events, by the identity of the tuple passed (a session
        # passes the same one with every append).
        self._preambles: dict[int, tuple[Sequence[Event | NewEvent], list[EncodedEvent]]] = {}
        # stream id -> (version, head hash) this store last wrote (see _remember_head)
        self._heads: dict[str, tuple[int, str]] = {}
        # Appends with expected_version "any" to a stream that another append of this
        # store is writing wait, and then run together (eventstore/coalesce.py).
        self._appends: AppendQueue[_Append, AppendResult] = AppendQueue(
            self._append_alone, self._append_together, max_bytes=self._group_bytes
        )

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event | NewEvent],
        expected_version: ExpectedVersion,
        on_new_stream: Sequence[Event | NewEvent],
    ) -> AppendResult:
        """:meth:`EventStore.append <eventstore.EventStore.append>`."""
        check_stream_id(stream_id)
        check_expected_version(expected_version)
        batch = encode(events)
        if not batch:
            raise InvalidArgumentError("append needs at least one event")
        preamble = self._encode_preamble(on_new_stream)
        if len({e.event_id for e in batch + preamble}) != len(batch) + len(preamble):
            raise InvalidArgumentError("the events of one append need distinct event ids")
        await self._setup.ensure()
        self._setup.check_known()
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
                return await self._write(
                    lambda conn: self._append_tx(
                        conn, stream_id, batch, preamble, expected_version
                    ),
                    quick=len(batch) <= QUICK_BATCH,
                    idempotent=True,
                )
            except IntegrityError:
                # These event ids are stored already (an idempotent retry), or a
                # concurrent writer created the stream first, or something else is wrong.
                original, exists = await self._transactions.run(
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
        try:
            result = await self._write(
                lambda conn: self._append_tx(conn, stream_id, combined, preamble, ANY),
                quick=len(combined) <= QUICK_BATCH,
                idempotent=True,
            )
        except CancelledAfterCommit as committed:
            raise CancelledAfterCommit(_split(committed.result, sizes)) from None
        return _split(result, sizes)

    async def _write(
        self, fn: Callable[[Connection], R], *, quick: bool, idempotent: bool = False
    ) -> R:
        """Run the append transaction ``fn``; one that found the live projection set
        changed (nothing written) is run again, on the set reloaded."""
        while True:
            try:
                return await self._transactions.run(
                    fn, write=True, quick=quick, idempotent=idempotent
                )
            except LiveSetChanged:
                await self._setup.reload()
                self._setup.check_known()

    def _group_bytes(self) -> int:
        """The most payload bytes one combined append carries: well inside the
        database's statement limit, once known (see _check_sizes)."""
        limit = self._size_limit
        if isinstance(limit, _Unasked) or limit is None:
            return MAX_GROUP_BYTES
        return min(MAX_GROUP_BYTES, limit // 2)

    async def append_decided(
        self,
        stream_id: str,
        decide: Callable[[Connection, int], tuple[Sequence[Event], R] | None],
        on_new_stream: Sequence[Event | NewEvent],
    ) -> tuple[AppendResult, R] | None:
        """:meth:`EventStore.append_decided <eventstore.EventStore.append_decided>`."""
        check_stream_id(stream_id)
        preamble = self._encode_preamble(on_new_stream)
        await self._setup.ensure()
        self._setup.check_known()
        raced = False
        while True:
            try:
                return await self._write(
                    lambda conn: self._decided_tx(conn, stream_id, decide, preamble),
                    quick=True,
                )
            except IntegrityError:
                exists = await self._transactions.run(
                    lambda conn: _stream_exists(conn, stream_id), write=False, quick=True
                )
                if raced or not exists:
                    raise  # not a creation race: the constraint's own error says why
                raced = True  # raced with the stream's creation: decide again

    def _encode_preamble(self, events: Sequence[Event | NewEvent]) -> list[EncodedEvent]:
        """:func:`encode` of ``on_new_stream``, remembered for a tuple of NewEvents
        (immutable, ids included: encoding it again would give the same bytes)."""
        if not events:
            return []
        if type(events) is not tuple or not all(type(e) is NewEvent for e in events):
            return encode(events)
        found = self._preambles.get(id(events))
        if found is not None and found[0] is events:
            return found[1]
        encoded = encode(events)
        if len(self._preambles) >= REMEMBERED_PREAMBLES:
            self._preambles.clear()
        self._preambles[id(events)] = (events, encoded)
        return encoded

    async def _check_sizes(self, batch: list[EncodedEvent]) -> None:
        """Refuse, before writing, an event larger than the database accepts in one
        statement (MariaDB's max_allowed_packet would otherwise drop the connection)."""
        limit = self._size_limit
        if isinstance(limit, _Unasked):
            key = self._engine_key
            known = _limits(key)
            if key in known:
                limit = known[key]
            else:
                limit = known[key] = await self._transactions.run(
                    self._dialect.max_value_bytes, write=False
                )
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
        preamble: list[EncodedEvent],
    ) -> tuple[AppendResult, R] | None:
        """The transaction of a decided append."""
        self._dialect.lock_streams(conn, (stream_id,))  # first: see Dialect.lock_streams
        known = self._heads.get(stream_id)
        if known is not None:  # decide on the head this store wrote last, then confirm it
            decision = decide(conn, known[0])
            batch = [] if decision is None else encode(decision[0])
            if batch:
                assert decision is not None
                done = self._write_tx(conn, stream_id, known, batch, preamble, True)
                if done is not None:
                    return done, decision[1]
            elif self._dialect.stream_head(conn, stream_id) == known:
                return None  # nothing to append, decided on the stored version
        row = self._dialect.stream_head(conn, stream_id)
        decision = decide(conn, row[0] if row is not None else 0)
        if decision is None:
            return None
        events, value = decision
        batch = encode(events)
        if not batch:
            return None
        return _written(self._write_tx(conn, stream_id, row, batch, preamble)), value

    def _append_tx(
        self,
        conn: Connection,
        stream_id: str,
        batch: list[EncodedEvent],
        preamble: list[EncodedEvent],
        expected: ExpectedVersion,
    ) -> AppendResult:
        """The transaction of a plain (or combined) append."""
        self._dialect.lock_streams(conn, (stream_id,))  # first: see Dialect.lock_streams
        known = self._heads.get(stream_id)
        if known is not None and _matches(expected, known[0]):
            done = self._write_tx(conn, stream_id, known, batch, preamble, True)
            if done is not None:
                return done
        row = self._dialect.stream_head(conn, stream_id)
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
        batch: list[EncodedEvent],
        preamble: list[EncodedEvent],
        confirm: bool = False,
    ) -> AppendResult | None:
        """Write ``batch`` after the stream head ``row`` (None: a new stream, which gets
        ``preamble`` first) through the dialect's ``write_batch``. With ``confirm``,
        ``row`` is the head this store wrote last, not one read in this transaction: if
        the stream moved meanwhile nothing is written and None is returned (the caller
        reads the row and tries again)."""
        to_write = batch if row is not None else preamble + batch
        now = time.time_ns() // 1000
        # The chain does not depend on positions: hash first, so the stream's new head
        # can be written by the same statement that reserves the positions.
        current, previous = (row[0], row[1]) if row is not None else (0, GENESIS)
        limit = self._size_limit
        write = StreamWrite(
            stream_id,
            to_write,
            len(batch),
            chain_of(previous, stream_id, current + 1, now, to_write),
            row,
            current + len(to_write),
            now,
            self._setup,
            confirm,
            None if isinstance(limit, _Unasked) else limit,
        )
        last_position = self._dialect.write_batch(conn, write)
        if last_position is None:
            return None
        if self._dialect.confirms_cached_heads:
            self._remember_head(stream_id, write.last_version, write.digests[-1])
        return write.result(last_position)

    def _remember_head(self, stream_id: str, version: int, head_hash: str) -> None:
        """Remember the head this store just wrote, for its next append to the stream.

        Written before the commit: if the transaction then rolls back, the next append
        finds the stream's row elsewhere than remembered and reads it (a remembered head
        is only ever a guess that the UPDATE confirms).
        """
        heads = self._heads
        heads.pop(stream_id, None)  # newest last: the oldest go first when full
        heads[stream_id] = (version, head_hash)
        if len(heads) > REMEMBERED_HEADS:
            del heads[next(iter(heads))]

    @staticmethod
    def _original_tx(
        conn: Connection, stream_id: str, batch: list[EncodedEvent]
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

"""Typed records the store takes and returns."""

from __future__ import annotations

import abc
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, Protocol

from sqlalchemy import Connection, MetaData

from .codec import decode_event
from .events import AnyEvent, Event

ANY: Literal["any"] = "any"
NO_STREAM: Literal["no stream"] = "no stream"
ExpectedVersion = int | Literal["any", "no stream"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(micros: int) -> datetime:
    """UTC datetime of a stored timestamp (microseconds since the epoch)."""
    return EPOCH + timedelta(microseconds=micros)


def to_micros(moment: datetime) -> int:
    """Stored form of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append, with the id that makes its append idempotent."""

    event: Event
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored in the log."""

    position: int
    stream_id: str
    version: int
    event_id: str
    event_type: str
    schema_version: int
    event: AnyEvent
    recorded_at: datetime
    hash: str
    payload: bytes


def stored_bytes(value: Any) -> bytes:
    """A payload as stored. Every payload is written as bytes, but an edit made
    outside convstore can leave text in the column (SQLite's ``replace()`` returns
    TEXT): taken as its UTF-8 bytes, it is read, hashed and reported like any other
    changed payload instead of stopping the reader."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)


def recorded_from_row(row: Any) -> RecordedEvent:
    """A stored row of ``convstore_events`` as a :class:`RecordedEvent` (its payload
    decoded and upcast; DecodeError if it cannot be read)."""
    payload = stored_bytes(row.payload)
    return RecordedEvent(
        position=row.position,
        stream_id=row.stream_id,
        version=row.version,
        event_id=row.event_id,
        event_type=row.event_type,
        schema_version=row.schema_version,
        event=decode_event(row.event_type, row.schema_version, payload),
        recorded_at=to_datetime(row.recorded_at),
        hash=row.hash,
        payload=payload,
    )


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed: versions and positions of its first and last events."""

    stream_id: str
    first_version: int
    last_version: int
    first_position: int
    last_position: int


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One stream (session) of the log."""

    stream_id: str
    version: int
    head_hash: str
    created_at: datetime
    updated_at: datetime


# A projector's ``apply`` (or ``replay``): one batch of events, in a transaction.
ApplyFunction = Callable[[Connection, Sequence[RecordedEvent]], None]

# The rows of a projection's tables: ``{table: {primary key: other columns}}``.
Rows = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]


class Projector(Protocol):
    """A projection kept current inside the append transaction.

    ``apply`` runs in the same transaction as the insert of ``events`` (so reads of its
    tables are strongly consistent); it must only touch the tables in ``metadata``.

    The checking methods let audit and verify compare one stream at a time, in
    bounded memory and without writing: ``expected_rows`` is the pure fold of one
    stream's whole log into the rows the tables should hold for it, ``live_rows`` reads
    the rows they do hold, and ``stream_ids`` lists every stream that has rows (so rows
    of a stream the log does not have are found too).

    A projector may also declare optional abilities: subclass :class:`BaseProjector`,
    which holds their defaults. One that only implements this protocol is adapted once,
    where it enters a store or the registry (:func:`eventstore.registry.adopt`), its
    ``reads_positions`` and ``replay`` taken from it if it has them.
    """

    name: str
    schema_version: int
    metadata: MetaData

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None: ...

    def reset(self, conn: Connection) -> None: ...

    def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows: ...

    def live_rows(self, conn: Connection, stream_id: str) -> Rows: ...

    def stream_ids(self, conn: Connection) -> set[str]: ...


class BaseProjector(abc.ABC):
    """A :class:`Projector` with its optional abilities declared (subclass it).

    ``reads_positions``: False promises that ``apply`` reads neither the events'
    ``position`` nor the events table; on MariaDB appends are then applied to it before
    their events are written and numbered (the positions are taken in the statement
    that commits, so a stalled client holds no lock that other sessions' appends need;
    see eventstore/backends/mysql.py). True (the default): MariaDB appends take their
    positions first and hold the log's write lock until they commit.

    ``replay(conn, events)`` is what a catch-up (:func:`~eventstore.registry.catch_up`,
    so every rebuild) calls instead of ``apply``: the events come in position order, in
    batches, to tables that hold exactly the log before them and that no append writes
    meanwhile (appends skip a projection that is behind). It must leave the same rows
    ``apply`` would; it may write them in bulk. By default it is ``apply``.
    """

    name: str
    schema_version: int
    metadata: MetaData
    reads_positions: ClassVar[bool] = True

    @abc.abstractmethod
    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        """Keep the tables current with ``events``, in the append's transaction."""

    def replay(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply a catch-up's batch of the log (by default: :meth:`apply`)."""
        self.apply(conn, events)

    @abc.abstractmethod
    def reset(self, conn: Connection) -> None:
        """Empty the tables (a rebuild from the log follows)."""

    @abc.abstractmethod
    def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
        """The rows the tables should hold for one stream: the pure fold of its log."""

    @abc.abstractmethod
    def live_rows(self, conn: Connection, stream_id: str) -> Rows:
        """The rows the tables hold for one stream."""

    @abc.abstractmethod
    def stream_ids(self, conn: Connection) -> set[str]:
        """Every stream the tables hold rows of."""


@dataclass(frozen=True, slots=True)
class ImportedEvent:
    """An event recorded in another log (read from an export), to be written as it is
    (:meth:`~eventstore.EventStore.write_imported`): every stored field but its
    position, and ``origin``, where it came from (e.g. ``"line 12"``), which errors
    about it name."""

    stream_id: str
    version: int
    event_id: str
    event_type: str
    schema_version: int
    recorded_at: int  # microseconds since the epoch, UTC
    hash: str
    payload: bytes
    origin: str = ""

    def same_event(self, other: ImportedEvent) -> bool:
        """Whether ``other`` holds the same event (every field but the origin)."""
        return self.fields() == other.fields()

    def fields(self) -> tuple[Any, ...]:
        """Every stored field, in column order."""
        return (
            self.stream_id,
            self.version,
            self.event_id,
            self.event_type,
            self.schema_version,
            self.recorded_at,
            self.hash,
            self.payload,
        )

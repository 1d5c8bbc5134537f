"""Typed records the store takes and returns."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

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

    A projector may also set ``reads_positions = False``: its ``apply`` then promises
    not to read the events' ``position`` nor the events table, and on MariaDB appends
    are applied to it before their events are written and numbered (the positions are
    taken in the statement that commits, so a stalled client holds no lock that other
    sessions' appends need; see eventstore/backends/mysql.py). Without the attribute
    (or with True), MariaDB appends take their positions first, as before, and hold the
    log's write lock until they commit.

    A projector may also have a method ``replay(conn, events)``, which a catch-up
    (:func:`~eventstore.registry.catch_up`, so every rebuild) calls instead of
    ``apply``: the events come in position order, in batches, to tables that hold
    exactly the log before them and that no append writes meanwhile (appends skip a
    projection that is behind). It must leave the same rows ``apply`` would; it may
    write them in bulk.
    """

    name: str
    schema_version: int
    metadata: MetaData

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None: ...

    def reset(self, conn: Connection) -> None: ...

    def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows: ...

    def live_rows(self, conn: Connection, stream_id: str) -> Rows: ...

    def stream_ids(self, conn: Connection) -> set[str]: ...

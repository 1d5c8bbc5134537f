"""One append as its backend writes it: the encoded events, their chain hashes, the
stream head they follow, and the rows of ``convstore_events`` they become.

The stream writer (:mod:`eventstore.writer`) locks the stream, checks its version and
hashes the events; then it hands a :class:`StreamWrite` to its dialect's
:meth:`~eventstore.backends.base.Dialect.write_batch`, the one step each backend may
write its own way (positions, the stream's row, the events, the projections).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, select

from . import schema
from .codec import encode_event
from .errors import InvalidArgumentError
from .events import Event, event_type_of
from .prepared import Prepared
from .records import AppendResult, NewEvent, Projector, RecordedEvent, to_datetime


class LiveSetChanged(Exception):
    """Raised inside an append whose idea of the live projections is stale (the
    store reloads the set and writes again)."""


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event to append, encoded: everything of its row but its place in the log."""

    event_id: str
    event_type: str
    schema_version: int
    payload: bytes
    event: Event


def encode(events: Iterable[Event | NewEvent]) -> list[EncodedEvent]:
    """Encode events to append (InvalidArgumentError for anything else)."""
    encoded = []
    for item in events:
        new = item if isinstance(item, NewEvent) else NewEvent(item)
        if not isinstance(new.event, Event):
            raise InvalidArgumentError(f"not an event: {new.event!r}")
        encoded.append(
            EncodedEvent(
                event_id=str(new.event_id),
                event_type=event_type_of(new.event),
                schema_version=type(new.event).schema_version,
                payload=encode_event(new.event),
                event=new.event,
            )
        )
    return encoded


_s = schema.streams
STREAM = Prepared(select(_s.c.version, _s.c.head_hash).where(_s.c.stream_id == bindparam("sid")))
STREAM_FOR_UPDATE = Prepared(
    select(_s.c.version, _s.c.head_hash).where(_s.c.stream_id == bindparam("sid")).with_for_update()
)
INSERT_EVENTS = Prepared(insert(schema.events))
INSERT_STREAM = Prepared(
    insert(_s).values(
        stream_id=bindparam("sid"),
        version=bindparam("new_version"),
        head_hash=bindparam("new_head_hash"),
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
)


class LiveProjections(Protocol):
    """The live projection set an append applies (eventstore/setup.py: LogSetup):
    ``live`` at ``generation``, and whether one of them reads positions (they must then
    be taken first)."""

    @property
    def live(self) -> Sequence[Projector]: ...
    @property
    def generation(self) -> int: ...
    @property
    def positions_first(self) -> bool: ...


@dataclass(slots=True)
class StreamWrite:
    """One append, ready to write after the stream head ``head`` ((version, hash);
    None: a new stream). ``events`` are what is written (a new stream's preamble, then
    the caller's ``appended`` events), ``digests`` their chain hashes, ``projections``
    the live set to apply them to. With ``confirm``, ``head`` is the one this store
    wrote last, not one read in this transaction (see Dialect.write_batch).
    ``statement_limit`` is the largest payload the database takes in one statement, if
    known. (Made positionally on the hot path: a field's place is its meaning.)"""

    stream_id: str
    events: Sequence[EncodedEvent]
    appended: int
    digests: Sequence[str]
    head: Any  # (version, head hash), or None
    last_version: int  # the stream's version once written
    now: int
    projections: LiveProjections
    confirm: bool
    statement_limit: int | None

    def stream_values(self) -> dict[str, Any]:
        """The stream row's new values (``sid``, ``new_version``, ``new_head_hash``, ``now``)."""
        return {
            "sid": self.stream_id,
            "new_version": self.last_version,
            "new_head_hash": self.digests[-1],
            "now": self.now,
        }

    def rows(self, first_position: int) -> tuple[list[dict[str, Any]], list[RecordedEvent]]:
        """The rows of ``convstore_events``, and the same events as projections see them
        (``first_position`` 0: positions not taken yet, see MySQLDialect.write_batch)."""
        stream_id, now = self.stream_id, self.now
        recorded_at = to_datetime(now)
        current = self.last_version - len(self.events)
        rows: list[dict[str, Any]] = []
        recorded: list[RecordedEvent] = []
        for offset, (enc, digest) in enumerate(zip(self.events, self.digests, strict=True)):
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

    def result(self, last_position: int) -> AppendResult:
        """Where the caller's events landed, the last of them at ``last_position``."""
        last_version, appended = self.last_version, self.appended
        return AppendResult(
            stream_id=self.stream_id,
            first_version=last_version - appended + 1,
            last_version=last_version,
            first_position=last_position - appended + 1,
            last_position=last_position,
        )

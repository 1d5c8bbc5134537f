"""Export the log as JSON Lines, and import it into another database, losslessly.

One line per event, every stored field but its position, in position (commit) order::

    {"stream_id":"alice","version":1,"event_id":"…","event_type":"SessionStarted",
     "schema_version":1,"recorded_at":1764288000000000,"hash":"…","payload":{"type":…}}

A position belongs to the database that holds the event (on PostgreSQL it comes from
the writing transaction), so the file carries the order, not the numbers.

``recorded_at`` is the stored integer (microseconds since the epoch, UTC) and
``payload`` the stored bytes embedded as they are (they are JSON); a payload that is
not one line of JSON is written as ``payload_base64`` instead. Nothing is re-encoded,
so an export of an import of an export is the same bytes.

Import keeps every event's stream, version, id, type, revision, time, payload and hash,
and checks the hash chain of every stream as it reads (a file whose chain does not
verify is refused). Positions are assigned anew at the end of the target's log, in
file order (a reader tailing the log by position must see imported events as new
commits), so export → import into an empty database → export gives the same bytes on
every backend. Events already in the target (same stream,
version, id and hash) are skipped, so an interrupted import can be run again; an event
that conflicts with the target's history is refused, naming the session and version.
The projections are kept current by applying the imported events to each of the
store's projectors in the import transaction.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO

import msgspec
from sqlalchemy import Connection, insert, select, update

from eventstore import (
    EventStore,
    IntegrityError,
    InvalidArgumentError,
    RecordedEvent,
    decode_event,
    schema,
)
from eventstore.chain import GENESIS, chain_hash
from eventstore.records import to_datetime

from .admin import NotFoundError

# Events per read while exporting, and per transaction while importing.
BATCH_SIZE = 1000


class ExportedEvent(msgspec.Struct, omit_defaults=True):
    """One line of an export: an event with every stored field."""

    stream_id: str
    version: int
    event_id: str
    event_type: str
    schema_version: int
    recorded_at: int
    hash: str
    payload: msgspec.Raw = msgspec.Raw()  # empty: the line has payload_base64 instead
    payload_base64: str | None = None
    position: int | None = None  # read from older exports and ignored; never written

    def payload_bytes(self) -> bytes:
        if len(self.payload):
            return bytes(self.payload)
        if self.payload_base64 is not None:
            try:
                return base64.b64decode(self.payload_base64, validate=True)
            except ValueError:  # binascii.Error
                raise InvalidArgumentError(
                    f"{self.stream_id} v{self.version}: payload_base64 is not base64"
                ) from None
        raise InvalidArgumentError(f"{self.stream_id} v{self.version}: the line has no payload")


_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(ExportedEvent)
_any_decoder = msgspec.json.Decoder()


def _payload_fields(data: bytes) -> dict[str, Any]:
    if b"\n" not in data and b"\r" not in data:
        try:
            _any_decoder.decode(data)
            return {"payload": msgspec.Raw(data)}
        except msgspec.DecodeError:
            pass
    return {"payload_base64": base64.b64encode(data).decode()}


def export_line(row: Any) -> bytes:
    """The export line of one stored event row (with its newline)."""
    return (
        _encoder.encode(
            ExportedEvent(
                stream_id=row.stream_id,
                version=row.version,
                event_id=row.event_id,
                event_type=row.event_type,
                schema_version=row.schema_version,
                recorded_at=row.recorded_at,
                hash=row.hash,
                **_payload_fields(bytes(row.payload)),
            )
        )
        + b"\n"
    )


async def export_events(
    store: EventStore,
    out: BinaryIO,
    *,
    session: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the log (or one ``session``'s events) to ``out`` as JSON Lines.

    Reads one consistent snapshot, a page at a time (appends continue meanwhile).
    Returns the number of events written. NotFoundError for an unknown session.
    """
    e = schema.events

    def write(conn: Connection) -> int:
        written = 0
        last = 0
        while True:
            query = select(e).where(e.c.position > last).order_by(e.c.position).limit(BATCH_SIZE)
            if session is not None:
                query = query.where(e.c.stream_id == session)
            rows = conn.execute(query).all()
            if not rows:
                break
            out.write(b"".join(export_line(row) for row in rows))
            written += len(rows)
            last = rows[-1].position
            if progress is not None:
                progress(len(rows))
        return written

    count = await store.read_snapshot(write)
    out.flush()
    if session is not None and count == 0:
        raise NotFoundError(f"no session {session!r} in this database")
    return count


# -- import -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did: events written, and events skipped as already present."""

    imported: int
    skipped: int
    sessions: int


def read_lines(source: BinaryIO) -> Iterator[ExportedEvent]:
    """The events of an export file; InvalidArgumentError names a bad line."""
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            yield _line_decoder.decode(line)
        except msgspec.DecodeError as error:  # ValidationError is a DecodeError
            raise InvalidArgumentError(f"line {number}: not an exported event: {error}") from None


def _batches(lines: Iterable[ExportedEvent]) -> Iterator[list[ExportedEvent]]:
    batch: list[ExportedEvent] = []
    for line in lines:
        batch.append(line)
        if len(batch) == BATCH_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class _Head:
    """A stream's state in the target while a batch is imported."""

    version: int
    hash: str
    created_at: int
    updated_at: int


class _Importer:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.imported = 0
        self.skipped = 0
        self.sessions: set[str] = set()

    def batch_tx(self, conn: Connection, *, batch: list[ExportedEvent]) -> None:
        sids = {line.stream_id for line in batch}
        # First: no other writer of these sessions until commit, taken before anything
        # that could give this transaction its positions (EventStore.lock_streams).
        self.store.lock_streams(conn, sids)
        self.store.lock_log(conn)  # positions are ours until commit
        s, e = schema.streams, schema.events
        heads: dict[str, _Head] = {}
        for sid in sids:
            row = conn.execute(
                select(s.c.version, s.c.head_hash, s.c.created_at, s.c.updated_at).where(
                    s.c.stream_id == sid
                )
            ).first()
            heads[sid] = _Head(*row) if row else _Head(0, GENESIS, 0, 0)
        existing = self._existing(conn, batch, heads)
        rows: list[dict[str, Any]] = []
        recorded: list[RecordedEvent] = []
        for line in batch:
            version, previous = heads[line.stream_id].version, heads[line.stream_id].hash
            data = line.payload_bytes()
            if line.version <= version:
                if existing.get((line.stream_id, line.version)) != (line.event_id, line.hash):
                    raise IntegrityError(
                        f"session {line.stream_id!r} v{line.version}: the database already "
                        "has a different event there; nothing of this batch was imported"
                    )
                self.skipped += 1
                continue
            if line.version != version + 1:
                raise IntegrityError(
                    f"session {line.stream_id!r} v{line.version}: the file skips from "
                    f"v{version} (events missing)"
                )
            expected = chain_hash(
                previous,
                stream_id=line.stream_id,
                version=line.version,
                event_id=line.event_id,
                event_type=line.event_type,
                schema_version=line.schema_version,
                recorded_at=line.recorded_at,
                payload=data,
            )
            if expected != line.hash:
                raise IntegrityError(
                    f"session {line.stream_id!r} v{line.version}: its hash does not verify "
                    "(the file was changed, or exported from a tampered log)"
                )
            event = decode_event(line.event_type, line.schema_version, data)
            rows.append(
                {
                    "position": 0,  # taken below, once the batch's size is known
                    "stream_id": line.stream_id,
                    "version": line.version,
                    "event_id": line.event_id,
                    "event_type": line.event_type,
                    "schema_version": line.schema_version,
                    "payload": data,
                    "recorded_at": line.recorded_at,
                    "hash": line.hash,
                }
            )
            recorded.append(
                RecordedEvent(
                    position=0,
                    stream_id=line.stream_id,
                    version=line.version,
                    event_id=line.event_id,
                    event_type=line.event_type,
                    schema_version=line.schema_version,
                    event=event,
                    recorded_at=to_datetime(line.recorded_at),
                    hash=line.hash,
                    payload=data,
                )
            )
            created = heads[line.stream_id].created_at if version else line.recorded_at
            heads[line.stream_id] = _Head(line.version, line.hash, created, line.recorded_at)
        if not rows:
            return
        # Positions the way an append takes them (on PostgreSQL from this transaction's
        # id, so a reader tailing the log never skips an imported event).
        first = self.store.reserve_positions(conn, len(rows)) - len(rows) + 1
        for offset, values in enumerate(rows):
            values["position"] = first + offset
        recorded = [
            dataclasses.replace(r, position=first + offset) for offset, r in enumerate(recorded)
        ]
        conn.execute(insert(e), rows)
        self._write_streams(conn, heads, recorded)
        # Like an append: the live projections are kept current in the same transaction
        # (one that is behind catches up from the log, where these events now are).
        for projector in self.store.projectors:
            projector.apply(conn, recorded)
        self.imported += len(rows)
        self.sessions.update(r.stream_id for r in recorded)

    @staticmethod
    def _existing(
        conn: Connection,
        batch: list[ExportedEvent],
        heads: dict[str, _Head],
    ) -> dict[tuple[str, int], tuple[str, str]]:
        """(event_id, hash) of the target's events at the versions the batch repeats."""
        e = schema.events
        wanted: dict[str, list[int]] = {}
        for line in batch:
            if line.version <= heads[line.stream_id].version:
                wanted.setdefault(line.stream_id, []).append(line.version)
        found: dict[tuple[str, int], tuple[str, str]] = {}
        for sid, versions in wanted.items():
            query = select(e.c.version, e.c.event_id, e.c.hash).where(
                e.c.stream_id == sid, e.c.version.between(min(versions), max(versions))
            )
            for row in conn.execute(query):
                found[(sid, row.version)] = (row.event_id, row.hash)
        return found

    @staticmethod
    def _write_streams(
        conn: Connection, heads: dict[str, _Head], recorded: list[RecordedEvent]
    ) -> None:
        s = schema.streams
        new = {r.stream_id for r in recorded if r.version == 1}
        for sid in dict.fromkeys(r.stream_id for r in recorded):
            head = heads[sid]
            values = {
                "version": head.version,
                "head_hash": head.hash,
                "updated_at": head.updated_at,
            }
            if sid in new:
                conn.execute(insert(s).values(stream_id=sid, created_at=head.created_at, **values))
            else:
                conn.execute(update(s).where(s.c.stream_id == sid).values(**values))


async def import_events(
    store: EventStore,
    source: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Load an export into ``store`` (see the module's docstring for the rules).

    Each batch of events is one transaction; a refused batch (a conflicting or
    tampered event) raises :class:`IntegrityError` and leaves the batches before it
    imported, which a second run skips.
    """
    await store.ensure_tables()
    importer = _Importer(store)
    for batch in _batches(read_lines(source)):
        await store.run(partial(importer.batch_tx, batch=batch), write=True)
        if progress is not None:
            progress(len(batch))
    return ImportResult(importer.imported, importer.skipped, len(importer.sessions))

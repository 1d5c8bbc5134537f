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
verify is refused). A file (anything seekable) is read once before anything is
written, so a bad line, a chain that does not verify or a session with events missing
is refused with nothing imported. A line is read up to a bound (``MAX_LINE_BYTES``,
64 MiB, or ``max_line_bytes``) and refused past it without being read further.

Positions are assigned anew at the end of the target's log, in file order (a reader
tailing the log by position must see imported events as new commits), so export →
import into an empty database → export gives the same bytes on every backend. Events
already in the target (same stream, version, id and hash, and a line whose fields give
that hash) are skipped, so an interrupted import can be run again, and so is a line
the file repeats exactly; an event that conflicts with the target's history (or with
an earlier line of the file) is refused, naming the line, the session, the version
and the fields that differ. The projections are kept current by applying the imported
events to each of the store's projectors in the import transaction.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import msgspec
from sqlalchemy import Connection, MetaData, Table, insert, inspect, select, update

from eventstore import (
    ConvstoreError,
    EventStore,
    IntegrityError,
    InvalidArgumentError,
    RecordedEvent,
    decode_event,
    schema,
)
from eventstore.chain import GENESIS, chain_hash
from eventstore.records import to_datetime, to_micros
from eventstore.store import MAX_INTEGER, check_stream_id

from .admin import NotFoundError

# Events per read while exporting, and per transaction while importing.
BATCH_SIZE = 1000


# What a stored event's fields can hold (the log's columns; a time datetime can show).
_Version = Annotated[int, msgspec.Meta(ge=1, le=MAX_INTEGER)]
_EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=36)]
_EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Revision = Annotated[int, msgspec.Meta(ge=1, le=32767)]
_Micros = Annotated[int, msgspec.Meta(ge=0, le=to_micros(datetime.max.replace(tzinfo=UTC)))]
_Hash = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class ExportedEvent(msgspec.Struct, omit_defaults=True):
    """One line of an export: an event with every stored field."""

    stream_id: str
    version: _Version
    event_id: _EventId
    event_type: _EventType
    schema_version: _Revision
    recorded_at: _Micros
    hash: _Hash
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

# The longest line (one event) import reads by default: 64 MiB. A line is read up to
# the bound and no further, so a hostile file costs no more memory than that; an export
# of larger events is imported with a larger bound (``max_line_bytes``,
# ``convstore DB import --max-line-bytes``).
MAX_LINE_BYTES = 64 * 1024 * 1024


class LineTooLongError(InvalidArgumentError):
    """A line of the file is longer than the import's bound; nothing of it was read
    beyond the bound."""

    def __init__(self, number: int, limit: int) -> None:
        super().__init__(
            f"line {number} is longer than {limit:,} bytes, the longest line import reads "
            "(an export of larger events imports with a larger bound: --max-line-bytes, "
            "or max_line_bytes= in Python)"
        )
        self.line = number
        self.limit = limit


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did: events written, and events skipped as already present."""

    imported: int
    skipped: int
    sessions: int


def _numbered_lines(
    source: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, ExportedEvent]]:
    """(line number, event) of each non-blank line; each line is read up to the bound
    (LineTooLongError past it) and checked (InvalidArgumentError names a bad line)."""
    if isinstance(max_line_bytes, bool) or not isinstance(max_line_bytes, int):
        raise InvalidArgumentError(f"max_line_bytes must be an integer, not {max_line_bytes!r}")
    if max_line_bytes < 1:
        raise InvalidArgumentError(f"max_line_bytes must be >= 1, not {max_line_bytes}")
    number = 0
    while True:
        line = _read_line(source, max_line_bytes, number + 1)
        if not line:
            return
        number += 1
        if not line.strip():
            continue
        try:
            event = _line_decoder.decode(line)
        except msgspec.DecodeError as error:  # ValidationError is a DecodeError
            raise InvalidArgumentError(f"line {number}: not an exported event: {error}") from None
        try:
            check_stream_id(event.stream_id)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(f"line {number}: {error}") from None
        yield number, event


# A long line is read in pieces of this size, so one past the bound is refused having
# held no more than the bound (a single read would also build a copy of it).
_PIECE = 1024 * 1024


def _read_line(source: BinaryIO, limit: int, number: int) -> bytes:
    """The next line of ``source`` (b"" at its end), or LineTooLongError once more than
    ``limit`` bytes of it (its newline aside) were read."""
    pieces: list[bytes] = []
    size = 0
    while True:
        piece = source.readline(min(_PIECE, limit + 1 - size))
        if not piece:
            break
        pieces.append(piece)
        size += len(piece)
        if piece.endswith(b"\n"):
            break
        if size > limit:
            raise LineTooLongError(number, limit)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def read_lines(
    source: BinaryIO, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[ExportedEvent]:
    """The events of an export file; InvalidArgumentError names a bad line,
    LineTooLongError one longer than ``max_line_bytes``."""
    for _, event in _numbered_lines(source, max_line_bytes):
        yield event


def _batches(
    lines: Iterable[tuple[int, ExportedEvent]],
) -> Iterator[list[tuple[int, ExportedEvent]]]:
    batch: list[tuple[int, ExportedEvent]] = []
    for line in lines:
        batch.append(line)
        if len(batch) == BATCH_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


def _line_hash(line: ExportedEvent, previous: str, data: bytes) -> str:
    """The chain hash of the event ``line`` describes, after ``previous``."""
    return chain_hash(
        previous,
        stream_id=line.stream_id,
        version=line.version,
        event_id=line.event_id,
        event_type=line.event_type,
        schema_version=line.schema_version,
        recorded_at=line.recorded_at,
        payload=data,
    )


def _verify(number: int, line: ExportedEvent, previous: str) -> bytes:
    """The payload of ``line`` once its hash verifies after ``previous`` and the event
    decodes (IntegrityError / DecodeError name the line)."""
    data = line.payload_bytes()
    if _line_hash(line, previous, data) != line.hash:
        raise IntegrityError(
            f"line {number}: session {line.stream_id!r} v{line.version}: its hash does not "
            "verify (the file was changed, or exported from a tampered log)"
        )
    return data


def _check_file(source: BinaryIO, max_line_bytes: int) -> None:
    """Read the whole file once before anything is written: every line, each session's
    chain from its first line in the file, every event's decoding. A file that would be
    refused half-way is refused here, with nothing imported."""
    heads: dict[str, tuple[int, str]] = {}
    for number, line in _numbered_lines(source, max_line_bytes):
        head = heads.get(line.stream_id)
        if head is not None and line.version <= head[0]:
            continue  # a repeated line: compared with the first one by the import
        if head is not None and line.version != head[0] + 1:
            raise IntegrityError(
                f"line {number}: session {line.stream_id!r} v{line.version}: the file skips "
                f"from v{head[0]} (events missing)"
            )
        if head is not None or line.version == 1:
            data = _verify(number, line, GENESIS if head is None else head[1])
        else:  # continues a session the target holds: verified against it on import
            data = line.payload_bytes()
        decode_event(line.event_type, line.schema_version, data)
        heads[line.stream_id] = (line.version, line.hash)


@dataclass(frozen=True, slots=True)
class _Head:
    """A stream's state in the target while a batch is imported."""

    version: int
    hash: str
    created_at: int
    updated_at: int


_COMPARED = ("event_id", "event_type", "schema_version", "recorded_at", "hash")


def _differences(file: Mapping[str, Any], there: Mapping[str, Any]) -> str:
    """What differs between two events at one version, field by field."""
    found = [
        f"{name} {file[name]!r} here, {there[name]!r} there"
        for name in _COMPARED
        if file[name] != there[name]
    ]
    if file["payload"] != there["payload"]:
        found.append(
            f"the payload ({len(file['payload']):,} bytes here, {len(there['payload']):,} there)"
        )
    return "; ".join(found) or "nothing but the line"


def _fields(line: ExportedEvent) -> dict[str, Any]:
    fields = {name: getattr(line, name) for name in _COMPARED}
    return {**fields, "payload": line.payload_bytes()}


class _Importer:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.imported = 0
        self.skipped = 0
        self.sessions: set[str] = set()

    def batch_tx(self, conn: Connection, *, batch: list[tuple[int, ExportedEvent]]) -> None:
        sids = {line.stream_id for _, line in batch}
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
        # (stream, version) -> (line number, event) of the lines this batch writes
        written: dict[tuple[str, int], tuple[int, ExportedEvent]] = {}
        for number, line in batch:
            version, previous = heads[line.stream_id].version, heads[line.stream_id].hash
            if line.version <= version:
                self._check_repeat(conn, number, line, existing, written)
                self.skipped += 1
                continue
            if line.version != version + 1:
                raise IntegrityError(
                    f"line {number}: session {line.stream_id!r} v{line.version}: the file "
                    f"skips from v{version} (events missing)"
                )
            data = _verify(number, line, previous)
            event = decode_event(line.event_type, line.schema_version, data)
            written[(line.stream_id, line.version)] = (number, line)
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
    def _check_repeat(
        conn: Connection,
        number: int,
        line: ExportedEvent,
        existing: Mapping[tuple[str, int], tuple[str, str]],
        written: Mapping[tuple[str, int], tuple[int, ExportedEvent]],
    ) -> None:
        """A line at a version the target (or this batch) has already: the same event
        is skipped; another one is refused, saying what differs."""
        key = (line.stream_id, line.version)
        where = f"line {number}: session {line.stream_id!r} v{line.version}"
        if key in written:
            first, earlier = written[key]
            if _fields(earlier) == _fields(line):
                return
            raise IntegrityError(
                f"{where}: line {first} of the file has another event at that version "
                f"({_differences(_fields(line), _fields(earlier))}); nothing of this batch "
                "was imported"
            )
        # The same event: its id and hash, and the line's own fields give that hash after
        # the stored event before it (so no field of the line differs).
        previous = existing.get((line.stream_id, line.version - 1), ("", GENESIS))[1]
        if existing.get(key) == (line.event_id, line.hash):
            if _line_hash(line, previous, line.payload_bytes()) == line.hash:
                return
            raise IntegrityError(
                f"{where}: the line names the database's event there (its id and hash) but "
                "its hash does not verify (the file was changed); nothing of this batch "
                "was imported"
            )
        e = schema.events
        stored = conn.execute(
            select(
                e.c.event_id,
                e.c.event_type,
                e.c.schema_version,
                e.c.recorded_at,
                e.c.hash,
                e.c.payload,
            ).where(e.c.stream_id == line.stream_id, e.c.version == line.version)
        ).first()
        there = {} if stored is None else {**stored._mapping, "payload": bytes(stored.payload)}
        raise IntegrityError(
            f"{where}: the database has another event at that version "
            f"({_differences(_fields(line), there) if there else 'one the file does not have'}): "
            "the file holds another history of this session (or the session was written to "
            "since the export); nothing of this batch was imported"
        )

    @staticmethod
    def _existing(
        conn: Connection,
        batch: list[tuple[int, ExportedEvent]],
        heads: dict[str, _Head],
    ) -> dict[tuple[str, int], tuple[str, str]]:
        """(event_id, hash) of the target's events at the versions the batch repeats,
        and at the version before each (to check a repeated line's hash)."""
        e = schema.events
        wanted: dict[str, list[int]] = {}
        for _, line in batch:
            if line.version <= heads[line.stream_id].version:
                wanted.setdefault(line.stream_id, []).append(line.version)
        found: dict[tuple[str, int], tuple[str, str]] = {}
        for sid, versions in wanted.items():
            query = select(e.c.version, e.c.event_id, e.c.hash).where(
                e.c.stream_id == sid, e.c.version.between(min(versions) - 1, max(versions))
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
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ImportResult:
    """Load an export into ``store`` (see the module's docstring for the rules).

    A seekable ``source`` (a file) is read once before anything is written: a bad or
    too long line, a hash that does not verify, an event that does not decode or a
    session with events missing is refused then, with nothing imported. Then each
    batch of events is one transaction; a refused batch (one that conflicts with the
    target) raises :class:`IntegrityError` and leaves the batches before it imported,
    which a second run skips. Lines longer than ``max_line_bytes`` are refused
    (:class:`LineTooLongError`) without being read past the bound.
    """
    if source.seekable():
        start = source.tell()
        await asyncio.to_thread(_check_file, source, max_line_bytes)
        source.seek(start)
    importer = _Importer(store)
    # The tables are created with the first batch (store.run), once its lines are read:
    # a file refused on its first lines leaves a database without tables as it was.
    for batch in _batches(_numbered_lines(source, max_line_bytes)):
        await store.run(partial(importer.batch_tx, batch=batch), write=True)
        if progress is not None:
            progress(len(batch))
    await store.ensure_tables()  # an empty file: the tables, as for any import
    return ImportResult(importer.imported, importer.skipped, len(importer.sessions))


# -- a database the import created -------------------------------------------------

# The files of a SQLite database besides the main one.
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True, slots=True)
class CreatedByImport:
    """What was at an import's target before the import opened it, so that a failed
    import removes the database (file, or tables) it created, if nothing came of it."""

    files: tuple[Path, ...]  # SQLite: the database's files that did not exist
    tables: frozenset[str] | None  # a server: the tables that existed (None: SQLite)

    @classmethod
    async def survey(cls, store: EventStore, sqlite_file: str | None) -> CreatedByImport:
        """Look before the store creates anything: ``sqlite_file`` is the target's file
        (None for a server; ``:memory:`` has none)."""
        if sqlite_file is not None:
            if sqlite_file == ":memory:":
                return cls((), None)
            paths = [Path(sqlite_file + suffix) for suffix in ("", *_SQLITE_COMPANIONS)]
            return cls(tuple(p for p in paths if not p.exists()), None)
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        return cls((), frozenset(names))

    async def undo(self, store: EventStore) -> bool:
        """After a failed import: remove what it created, if the log holds nothing (an
        import that committed batches keeps them; running it again finishes it).
        Returns whether anything was removed."""
        if self.tables is None and not any(path.exists() for path in self.files):
            return False  # nothing was created (a memory database, or no file yet)
        try:
            empty = await store.count_events() == 0
        except ConvstoreError:  # the tables were never created
            empty = True
        if not empty:
            return False
        if self.tables is None:
            await store.close()
            removed = [path for path in self.files if path.exists()]
            for path in removed:
                path.unlink()
            return bool(removed)
        before = self.tables

        def drop(conn: Connection) -> list[str]:
            names = inspect(conn).get_table_names()
            created = [n for n in names if n not in before and n.startswith("convstore_")]
            for name in created:
                Table(name, MetaData()).drop(conn)
            return created

        async with store.engine.begin() as conn:
            return bool(await conn.run_sync(drop))

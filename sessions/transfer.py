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
events to each of the store's projectors in the import transaction. This module reads
and writes the lines; the store checks and writes the events (:mod:`eventstore.imports`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import msgspec
from sqlalchemy import Connection, MetaData, Table, inspect

from eventstore import (
    MAX_INTEGER,
    ConvstoreError,
    EventStore,
    ImportedEvent,
    InvalidArgumentError,
    check_imported,
    check_stream_id,
    is_integer,
)
from eventstore.records import to_micros

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


# The stored fields a line carries as they are (the payload aside).
_STORED = (
    "stream_id",
    "version",
    "event_id",
    "event_type",
    "schema_version",
    "recorded_at",
    "hash",
)

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
                **{name: getattr(row, name) for name in _STORED},
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

    def write(rows: Sequence[Any]) -> None:
        out.write(b"".join(export_line(row) for row in rows))
        if progress is not None:
            progress(len(rows))

    count = await store.scan_events(write, stream_id=session, page_size=BATCH_SIZE)
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
    if not is_integer(max_line_bytes):
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


def _imported(source: BinaryIO, max_line_bytes: int) -> Iterator[ImportedEvent]:
    """The events of the file's lines, each naming its line (for errors)."""
    for number, line in _numbered_lines(source, max_line_bytes):
        yield ImportedEvent(
            **{name: getattr(line, name) for name in _STORED},
            payload=line.payload_bytes(),
            origin=f"line {number}",
        )


def _batches(events: Iterable[ImportedEvent]) -> Iterator[list[ImportedEvent]]:
    batch: list[ImportedEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) == BATCH_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


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
    session with events missing is refused then, with nothing imported
    (:func:`eventstore.check_imported`). Then each batch of events is one transaction
    (:meth:`eventstore.EventStore.write_imported`); a refused batch (one that
    conflicts with the target) raises :class:`IntegrityError` and leaves the batches
    before it imported, which a second run skips. Lines longer than ``max_line_bytes``
    are refused (:class:`LineTooLongError`) without being read past the bound.
    """
    if source.seekable():
        start = source.tell()
        await asyncio.to_thread(check_imported, _imported(source, max_line_bytes))
        source.seek(start)
    imported = skipped = 0
    sessions: set[str] = set()
    # The tables are created with the first batch (store.run), once its lines are read:
    # a file refused on its first lines leaves a database without tables as it was.
    for batch in _batches(_imported(source, max_line_bytes)):
        done = await store.write_imported(batch)
        imported += done.imported
        skipped += done.skipped
        sessions.update(done.streams)
        if progress is not None:
            progress(len(batch))
    await store.ensure_tables()  # an empty file: the tables, as for any import
    return ImportResult(imported, skipped, len(sessions))


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

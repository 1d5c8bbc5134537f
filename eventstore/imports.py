"""Writing events recorded elsewhere: the import of an export.

An export holds each event's stream, version, id, type, revision, time, payload and
hash, read from an export file (:mod:`sessions.transfer` reads and writes its lines);
each :class:`~eventstore.records.ImportedEvent` names where it came from (its
``origin``, e.g. ``"line 12"``), which every error about it names, with the file.

:func:`check_imported` reads a whole file's events before anything is written: each
session's chain from its first event in the file (:func:`~eventstore.chain.event_hash`,
the one definition of what a hash covers), versions without gaps, every payload
decodes. :func:`write_imported_tx` writes one batch in one transaction, as an append
would: the batch's streams are locked first (``lock_streams``: on PostgreSQL before the
transaction has an id, docs/design.md guarantee 4), then the log (``lock_log``);
positions are taken anew at the end of the log, in batch order, the way an append takes
them, so a reader tailing the log never skips an imported event; each event continues
its stream's chain in the target (the hash must verify after the stored head); and the
live projections are applied in the same transaction. An event the target holds
already (same stream, version, id and hash, and whose fields give that hash) is
skipped, so an interrupted import can be run again, and so is one the batch repeats
exactly; an event that conflicts with the target's history (or with an earlier one of
the file) is refused, naming both and the fields that differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from . import schema
from .backends.base import Dialect
from .chain import GENESIS, event_hash
from .codec import decode_event
from .errors import IntegrityError
from .records import ImportedEvent, Projector, RecordedEvent, to_datetime


@dataclass(frozen=True, slots=True)
class ImportedBatch:
    """What :meth:`~eventstore.EventStore.write_imported` did with one batch: events
    written, events skipped as already present, and the streams written to."""

    imported: int
    skipped: int
    streams: frozenset[str]


def _where(event: ImportedEvent) -> str:
    """How errors name an event: its origin, its session and its version."""
    return f"{event.origin}: session {event.stream_id!r} v{event.version}"


def _gap(event: ImportedEvent, head_version: int) -> IntegrityError:
    """The error for an event that does not follow its session's last one."""
    return IntegrityError(f"{_where(event)}: the file skips from v{head_version} (events missing)")


def _verify(event: ImportedEvent, previous: str) -> None:
    """Refuse ``event`` unless its hash verifies after ``previous``."""
    if event_hash(previous, event) != event.hash:
        raise IntegrityError(
            f"{_where(event)}: its hash does not verify (the file was changed, or "
            "exported from a tampered log)"
        )


def check_imported(events: Iterable[ImportedEvent]) -> None:
    """Check a whole file's events before anything is written: each session's chain
    from its first event in the file, versions without gaps, every payload decodes (an
    event that repeats an earlier version is compared on import). IntegrityError or
    DecodeError names the first event refused."""
    heads: dict[str, tuple[int, str]] = {}
    for event in events:
        head = heads.get(event.stream_id)
        if head is not None and event.version <= head[0]:
            continue  # a repeated event: compared with the first one by the import
        if head is not None and event.version != head[0] + 1:
            raise _gap(event, head[0])
        if head is not None or event.version == 1:
            _verify(event, GENESIS if head is None else head[1])
        # (else it continues a session the target holds: verified against it on import)
        decode_event(event.event_type, event.schema_version, event.payload)
        heads[event.stream_id] = (event.version, event.hash)


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


def _fields(event: ImportedEvent) -> dict[str, Any]:
    """The compared fields of an event, and its payload."""
    return {**{name: getattr(event, name) for name in _COMPARED}, "payload": event.payload}


class _Batch:
    """One batch of imported events in its transaction (see :func:`write_imported_tx`)."""

    def __init__(self, conn: Connection, batch: Sequence[ImportedEvent]) -> None:
        self.conn = conn
        self.heads = self._read_heads({event.stream_id for event in batch})
        self.existing = self._existing(batch)
        # (stream, version) -> the event this batch writes there
        self.written: dict[tuple[str, int], ImportedEvent] = {}
        self.rows: list[dict[str, Any]] = []
        self.recorded: list[RecordedEvent] = []
        self.skipped = 0

    def _read_heads(self, stream_ids: Iterable[str]) -> dict[str, _Head]:
        """Each stream's head in the target (version 0: a new stream)."""
        s = schema.streams
        heads = {}
        for sid in stream_ids:
            row = self.conn.execute(
                select(s.c.version, s.c.head_hash, s.c.created_at, s.c.updated_at).where(
                    s.c.stream_id == sid
                )
            ).first()
            heads[sid] = _Head(*row) if row else _Head(0, GENESIS, 0, 0)
        return heads

    def _existing(self, batch: Sequence[ImportedEvent]) -> dict[tuple[str, int], tuple[str, str]]:
        """(event_id, hash) of the target's events at the versions the batch repeats,
        and at the version before each (to check a repeated event's hash)."""
        e = schema.events
        wanted: dict[str, list[int]] = {}
        for event in batch:
            if event.version <= self.heads[event.stream_id].version:
                wanted.setdefault(event.stream_id, []).append(event.version)
        found: dict[tuple[str, int], tuple[str, str]] = {}
        for sid, versions in wanted.items():
            query = select(e.c.version, e.c.event_id, e.c.hash).where(
                e.c.stream_id == sid, e.c.version.between(min(versions) - 1, max(versions))
            )
            for row in self.conn.execute(query):
                found[(sid, row.version)] = (row.event_id, row.hash)
        return found

    def add(self, event: ImportedEvent) -> None:
        """Take ``event`` into the batch, or skip it as present (or refuse it)."""
        head = self.heads[event.stream_id]
        if event.version <= head.version:
            self._check_repeat(event)
            self.skipped += 1
            return
        if event.version != head.version + 1:
            raise _gap(event, head.version)
        _verify(event, head.hash)
        decoded = decode_event(event.event_type, event.schema_version, event.payload)
        self.written[(event.stream_id, event.version)] = event
        values = {
            name: getattr(event, name)
            for name in ("stream_id", "version", "event_id", "event_type", "schema_version")
        }
        # position: taken once the batch's size is known
        self.rows.append(
            {
                "position": 0,
                **values,
                "payload": event.payload,
                "recorded_at": event.recorded_at,
                "hash": event.hash,
            }
        )
        self.recorded.append(
            RecordedEvent(
                position=0,
                **values,
                event=decoded,
                recorded_at=to_datetime(event.recorded_at),
                hash=event.hash,
                payload=event.payload,
            )
        )
        created = head.created_at if head.version else event.recorded_at
        self.heads[event.stream_id] = _Head(event.version, event.hash, created, event.recorded_at)

    def _check_repeat(self, event: ImportedEvent) -> None:
        """An event at a version the target (or this batch) has already: the same event
        is skipped; another one is refused, saying what differs."""
        key = (event.stream_id, event.version)
        where = _where(event)
        earlier = self.written.get(key)
        if earlier is not None:
            if _fields(earlier) == _fields(event):
                return
            raise IntegrityError(
                f"{where}: {earlier.origin} of the file has another event at that version "
                f"({_differences(_fields(event), _fields(earlier))}); nothing of this batch "
                "was imported"
            )
        # The same event: its id and hash, and its own fields give that hash after the
        # stored event before it (so no field of it differs).
        previous = self.existing.get((event.stream_id, event.version - 1), ("", GENESIS))[1]
        if self.existing.get(key) == (event.event_id, event.hash):
            if event_hash(previous, event) == event.hash:
                return
            raise IntegrityError(
                f"{where}: the line names the database's event there (its id and hash) but "
                "its hash does not verify (the file was changed); nothing of this batch "
                "was imported"
            )
        raise IntegrityError(
            f"{where}: the database has another event at that version "
            f"({self._stored_differences(event)}): the file holds another history of this "
            "session (or the session was written to since the export); nothing of this "
            "batch was imported"
        )

    def _stored_differences(self, event: ImportedEvent) -> str:
        """What differs between ``event`` and the target's event at its version."""
        e = schema.events
        stored = self.conn.execute(
            select(
                e.c.event_id,
                e.c.event_type,
                e.c.schema_version,
                e.c.recorded_at,
                e.c.hash,
                e.c.payload,
            ).where(e.c.stream_id == event.stream_id, e.c.version == event.version)
        ).first()
        if stored is None:
            return "one the file does not have"
        there = {**stored._mapping, "payload": bytes(stored.payload)}
        return _differences(_fields(event), there)

    def write(self, dialect: Dialect, projectors: Sequence[Projector]) -> None:
        """Take positions, insert the events, advance the streams' rows, apply the
        projections."""
        count = len(self.rows)
        # Positions the way an append takes them (on PostgreSQL from this transaction's
        # id, so a reader tailing the log never skips an imported event).
        first = dialect.advance_head(self.conn, count)[0] - count + 1
        for offset, values in enumerate(self.rows):
            values["position"] = first + offset
        self.recorded = [
            dataclasses.replace(r, position=first + offset)
            for offset, r in enumerate(self.recorded)
        ]
        self.conn.execute(insert(schema.events), self.rows)
        self._write_streams()
        # Like an append: the live projections are kept current in the same transaction
        # (one that is behind catches up from the log, where these events now are).
        for projector in projectors:
            projector.apply(self.conn, self.recorded)

    def _write_streams(self) -> None:
        """Create or advance the row of each stream written to."""
        s = schema.streams
        new = {r.stream_id for r in self.recorded if r.version == 1}
        for sid in dict.fromkeys(r.stream_id for r in self.recorded):
            head = self.heads[sid]
            values = {
                "version": head.version,
                "head_hash": head.hash,
                "updated_at": head.updated_at,
            }
            if sid in new:
                self.conn.execute(
                    insert(s).values(stream_id=sid, created_at=head.created_at, **values)
                )
            else:
                self.conn.execute(update(s).where(s.c.stream_id == sid).values(**values))


def write_imported_tx(
    conn: Connection,
    dialect: Dialect,
    projectors: Sequence[Projector],
    batch: Sequence[ImportedEvent],
) -> ImportedBatch:
    """Write one batch of imported events (see the module docstring)."""
    # First: no other writer of these sessions until commit, taken before anything
    # that could give this transaction its positions (Dialect.lock_streams).
    dialect.lock_streams(conn, {event.stream_id for event in batch})
    dialect.lock_log(conn)  # positions are ours until commit
    work = _Batch(conn, batch)
    for event in batch:
        work.add(event)
    if work.rows:
        work.write(dialect, projectors)
    streams = frozenset(r.stream_id for r in work.recorded)
    return ImportedBatch(len(work.rows), work.skipped, streams)

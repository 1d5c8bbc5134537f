"""Removing whole streams on purpose (retention, deletion), leaving a tombstone.

The only code that DELETEs event rows. A stream is removed in a transaction of its
own that first takes the stream's lock (its writers wait holding nothing: as appends
take that lock before the log's, none can hold the stream's row while waiting for the
log), then the log's lock (no append to any stream while it goes). Its chain is
checked first, by the audit's own loop (:func:`~eventstore.chain.walk_chain`): a
tombstone would vouch for a tampered history, so a stream whose log does not verify,
or does not end where ``convstore_streams`` says, is refused. Then its events, its
rows in every projection table that has a ``stream_id`` column, and its streams row
go, and a row of ``convstore_tombstones`` keeps its final version and head hash, so
the audit still passes and tells this removal from a deletion behind the store's back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select

from . import schema
from .backends.base import Dialect
from .chain import GENESIS, walk_chain
from .errors import IntegrityError
from .records import Projector, to_datetime, to_micros


@dataclass(frozen=True, slots=True)
class RemovedStream:
    """A stream that was removed, as its tombstone records it."""

    stream_id: str
    version: int
    head_hash: str
    updated_at: datetime


def ensure_tombstones_tx(conn: Connection) -> None:
    """Create the tombstone table where it is missing (databases created before it)."""
    schema.tombstones.create(conn, checkfirst=True)


def _stream_tables(projectors: Sequence[Projector]) -> list[Table]:
    """Every projection table with a ``stream_id`` column: where a stream's rows are."""
    return [
        table
        for projector in projectors
        for table in projector.metadata.sorted_tables
        if "stream_id" in table.c
    ]


def _check_chain(conn: Connection, stream: Any) -> None:
    """Refuse to remove a stream whose log does not pass its audit."""
    e = schema.events
    sid = stream.stream_id
    events = conn.execute(select(e).where(e.c.stream_id == sid).order_by(e.c.version))
    count, head = 0, GENESIS
    for link in walk_chain(events):
        count += 1
        if link.event.version != link.expected_version or not link.sound:
            raise IntegrityError(
                f"session {sid!r} v{link.event.version} does not pass its audit: not "
                "removing it (a tombstone would vouch for a tampered history)"
            )
        head = link.event.hash
    if count != stream.version or head != stream.head_hash:
        raise IntegrityError(
            f"session {sid!r}: its log does not end where convstore_streams says: not removing it"
        )


def remove_stream_tx(
    conn: Connection,
    dialect: Dialect,
    projectors: Sequence[Projector],
    *,
    stream_id: str,
    reason: str,
    idle_before: int | None = None,
) -> RemovedStream | None:
    """Remove one stream (see the module docstring); None if it is gone already, or was
    written to at or after ``idle_before`` (microseconds) since it was chosen."""
    dialect.lock_streams(conn, (stream_id,))
    dialect.lock_log(conn)
    s, e = schema.streams, schema.events
    row = conn.execute(select(s).where(s.c.stream_id == stream_id)).first()
    if row is None or (idle_before is not None and row.updated_at >= idle_before):
        return None
    _check_chain(conn, row)
    conn.execute(delete(e).where(e.c.stream_id == stream_id))
    for table in _stream_tables(projectors):
        conn.execute(delete(table).where(table.c.stream_id == stream_id))
    conn.execute(delete(s).where(s.c.stream_id == stream_id))
    conn.execute(
        insert(schema.tombstones).values(
            stream_id=stream_id,
            removed_at=to_micros(datetime.now(UTC)),
            version=row.version,
            head_hash=row.head_hash,
            created_at=row.created_at,
            updated_at=row.updated_at,
            reason=reason,
        )
    )
    return RemovedStream(stream_id, row.version, row.head_hash, to_datetime(row.updated_at))

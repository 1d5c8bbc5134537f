"""Reading the log: the queries behind the store's reads, apart from its writers.

Each is a function of a connection (or builds the statement one runs), run by the
store in a read transaction; what they return is mapped to typed records
(:class:`~eventstore.records.RecordedEvent`, :class:`~eventstore.records.StreamInfo`).
:func:`replay_into` feeds the log to projectors inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Select, func, select

from . import schema
from .backends.base import Dialect
from .errors import InvalidArgumentError
from .records import (
    ApplyFunction,
    BaseProjector,
    Projector,
    StreamInfo,
    recorded_from_row,
    to_datetime,
)

_e, _s = schema.events, schema.streams


def stream_query(
    stream_id: str, *, after: int | None, upto: int | None, limit: int | None, desc: bool
) -> Select[Any]:
    """Events of one stream by version: ``after`` < version <= ``upto``."""
    query = select(_e).where(_e.c.stream_id == stream_id)
    if after is not None:
        query = query.where(_e.c.version > after)
    if upto is not None:
        query = query.where(_e.c.version <= upto)
    query = query.order_by(_e.c.version.desc() if desc else _e.c.version)
    return query if limit is None else query.limit(limit)


def read_all_tx(
    conn: Connection, dialect: Dialect, *, after_position: int, limit: int | None
) -> Sequence[Row[Any]]:
    """Events of every stream in position order after ``after_position``, below the
    backend's read horizon (see backends/postgres.py)."""
    query = select(_e).where(_e.c.position > after_position).order_by(_e.c.position)
    if limit is not None:
        query = query.limit(limit)
    bound = dialect.read_horizon(conn)
    if bound is None:
        return conn.execute(query).all()
    return conn.execute(query.where(_e.c.position < bound)).all()


def streams_query(*, after: str | None, limit: int | None) -> Select[Any]:
    """Streams ordered by id, after the id ``after``."""
    query = select(_s).order_by(_s.c.stream_id)
    if after is not None:
        query = query.where(_s.c.stream_id > after)
    return query if limit is None else query.limit(limit)


def stream_row_query(stream_id: str) -> Select[Any]:
    """The stream's row of ``convstore_streams``."""
    return select(_s).where(_s.c.stream_id == stream_id)


def idle_streams_query(updated_before: int) -> Select[Any]:
    """Streams last written before ``updated_before`` (microseconds), by id."""
    return select(_s).where(_s.c.updated_at < updated_before).order_by(_s.c.stream_id)


COUNT_EVENTS = select(func.count()).select_from(_e)


def stream_page_tx(
    conn: Connection, *, contains: str, order: str, limit: int, offset: int
) -> tuple[int, list[Row[Any]]]:
    """How many streams have ids containing ``contains``, and ``limit`` of them from
    ``offset`` in the ``order`` ("activity", "id", "events", "size" or "created"; then
    by id): their ``convstore_streams`` rows with ``size``, the bytes of their payloads
    (a listing to browse, e.g. the viewer's sessions page)."""
    where = [_s.c.stream_id.contains(contains, autoescape=True)] if contains else []
    size = select(func.coalesce(func.sum(func.length(_e.c.payload)), 0)).where(
        _e.c.stream_id == _s.c.stream_id
    )
    orders: dict[str, list[Any]] = {
        "activity": [_s.c.updated_at.desc(), _s.c.stream_id],
        "id": [_s.c.stream_id],
        "events": [_s.c.version.desc(), _s.c.stream_id],
        "created": [_s.c.created_at.desc(), _s.c.stream_id],
        "size": [size.scalar_subquery().desc(), _s.c.stream_id],
    }
    if order not in orders:
        raise InvalidArgumentError(f"order must be one of {', '.join(orders)}, not {order!r}")
    total = int(conn.execute(select(func.count()).select_from(_s).where(*where)).scalar_one())
    rows = conn.execute(
        select(_s, size.scalar_subquery().label("size"))
        .where(*where)
        .order_by(*orders[order])
        .limit(limit)
        .offset(offset)
    ).all()
    return total, list(rows)


def first_events_tx(conn: Connection, stream_ids: Sequence[str]) -> list[Row[Any]]:
    """The stored first event (version 1) of each of ``stream_ids`` that has one."""
    query = select(_e).where(_e.c.stream_id.in_(stream_ids), _e.c.version == 1)
    return list(conn.execute(query))


def scan_tx(
    conn: Connection,
    handle: Callable[[Sequence[Row[Any]]], None],
    *,
    stream_id: str | None,
    page_size: int,
) -> int:
    """Hand the stored rows of the log (of one stream), in position order, to
    ``handle``, ``page_size`` at a time; return how many."""
    handed = 0
    last = 0
    while True:
        query = select(_e).where(_e.c.position > last).order_by(_e.c.position).limit(page_size)
        if stream_id is not None:
            query = query.where(_e.c.stream_id == stream_id)
        rows = conn.execute(query).all()
        if not rows:
            return handed
        handle(rows)
        handed += len(rows)
        last = rows[-1].position


def has_event_tx(conn: Connection, stream_id: str, event_type: str) -> bool:
    """Whether the stream holds an event of type ``event_type``."""
    query = (
        select(_e.c.position)
        .where(_e.c.stream_id == stream_id, _e.c.event_type == event_type)
        .limit(1)
    )
    return conn.execute(query).first() is not None


def stream_info(row: Row[Any]) -> StreamInfo:
    """A row of ``convstore_streams`` as a :class:`StreamInfo`."""
    return StreamInfo(
        stream_id=row.stream_id,
        version=row.version,
        head_hash=row.head_hash,
        created_at=to_datetime(row.created_at),
        updated_at=to_datetime(row.updated_at),
    )


def _feed(
    conn: Connection,
    appliers: Sequence[ApplyFunction],
    after: int,
    limit: int | None,
    batch_size: int,
    progress: Callable[[int], None] | None,
    below: int | None,
) -> int:
    """Hand the log after position ``after`` (at most ``limit`` events, all if None),
    in position order and in batches, to each of ``appliers``; the last position handed
    (``after`` if none). With ``below``, only positions below it are read."""
    if not appliers:
        return after
    done = 0
    while limit is None or done < limit:
        size = batch_size if limit is None else min(batch_size, limit - done)
        query = select(_e).where(_e.c.position > after)
        if below is not None:
            query = query.where(_e.c.position < below)
        rows = conn.execute(query.order_by(_e.c.position).limit(size)).all()
        if not rows:
            break
        recorded = [recorded_from_row(row) for row in rows]
        for apply in appliers:
            apply(conn, recorded)
        after = recorded[-1].position
        done += len(recorded)
        if progress is not None:
            progress(len(recorded))
    return after


def replay_batch(
    conn: Connection,
    projector: BaseProjector,
    after: int,
    limit: int | None,
    progress: Callable[[int], None] | None,
    below: int | None,
) -> int:
    """One step of a catch-up: the log after ``after`` into the projector's
    :meth:`~eventstore.records.BaseProjector.replay` (see :func:`replay_into`)."""
    return _feed(conn, [projector.replay], after, limit, 1000, progress, below)


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
    appliers = [projector.apply for projector in projectors]
    return _feed(conn, appliers, after, limit, batch_size, progress, below)

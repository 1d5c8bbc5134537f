"""Repair: put each session's positions back in version order.

Within a session, position order is version order, on every backend (docs/design.md,
guarantee 4); ``audit`` reports an event whose position is not after the previous
version's. Releases before the fix described in :mod:`eventstore.backends.postgres`
could break that rule on PostgreSQL when several writers waited for one session at
once, and such a log then failed its audit, which made ``checkpoint`` and ``replay``
refuse it.

Positions are not part of the chain hash (:mod:`eventstore.chain`), so the order can
be put right without touching anything the audit vouches for: :func:`repair_positions`
gives a session's events the session's own positions, sorted, in version order. The
set of positions stays the same (the log's head, and on SQLite and MariaDB its
gaplessness, are unchanged), and so do every hash, version and payload. It is the one
code path that UPDATEs event rows, and it only ever writes ``position``.

Each session is repaired in a transaction of its own that first takes the session's
write lock (:meth:`~eventstore.EventStore.lock_streams`), so appends to it wait and
appends to every other session go on. A projection that is behind (catching up from
the log by position, see :mod:`eventstore.registry`) and has read past the first
position that moves is set back to the start, so its catch-up replays the log again
in the repaired order; live projections were kept in version order by the appends
themselves and stay as they are. (A projection that was caught up from the log while
it was out of order, e.g. one added to the database meanwhile, was fed a session's
events in position order: the audit's projection check shows it against the fold of
the repaired log, and a rebuild puts it right.) Running it again finds nothing to do.

A consumer that tails the log by position and has read past a repaired session's
first moved position (:attr:`RepairedStream.first_position`) saw that session's
events in the old order; resume it from before that position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection, bindparam, func, select, update

from . import registry, schema
from .store import EventStore

log = logging.getLogger("convstore.eventstore")


@dataclass(frozen=True, slots=True)
class RepairedStream:
    """One session whose positions were (with ``dry_run``: would be) renumbered."""

    stream_id: str
    events: int  # the session's events
    moved: int  # how many of them got another position
    first_position: int  # the lowest position that changed hands


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What :func:`repair_positions` did (or, with ``dry_run``, would do)."""

    dry_run: bool
    streams: tuple[RepairedStream, ...]
    projections_reset: tuple[str, ...]  # behind projections set back to the start

    @property
    def moved(self) -> int:
        """Events that got (would get) another position, in every session."""
        return sum(s.moved for s in self.streams)


_e = schema.events
_previous = func.lag(_e.c.position).over(partition_by=_e.c.stream_id, order_by=_e.c.version)
_ordered = select(_e.c.stream_id, _e.c.position, _previous.label("previous")).subquery()
# Sessions with an event whose position is below the previous version's.
_OUT_OF_ORDER = (
    select(_ordered.c.stream_id)
    .where(_ordered.c.position < _ordered.c.previous)
    .distinct()
    .order_by(_ordered.c.stream_id)
)
_STREAM_POSITIONS = (
    select(_e.c.version, _e.c.position)
    .where(_e.c.stream_id == bindparam("sid"))
    .order_by(_e.c.version)
)
# Moved rows go to their negated position first, then to their new one: the primary
# key is checked row by row, and each new position is some other moved row's old one.
_SET_ASIDE = (
    update(_e)
    .where(
        _e.c.stream_id == bindparam("sid"), _e.c.version.in_(bindparam("versions", expanding=True))
    )
    .values(position=-_e.c.position)
)
_RENUMBER = (
    update(_e)
    .where(_e.c.stream_id == bindparam("sid"), _e.c.version == bindparam("at_version"))
    .values(position=bindparam("new_position"))
)

_t = schema.tracking
_TRACKING_FOR_UPDATE = (
    select(_t.c.projection, _t.c.position, _t.c.live).order_by(_t.c.projection).with_for_update()
)


def _moves(conn: Connection, stream_id: str) -> tuple[int, list[tuple[int, int]]]:
    """The session's event count, and (version, new position) of each event whose
    position is not the one its place in version order gives it."""
    rows = conn.execute(_STREAM_POSITIONS, {"sid": stream_id}).all()
    ordered = sorted(position for _, position in rows)
    moves = [
        (version, new)
        for (version, position), new in zip(rows, ordered, strict=True)
        if position != new
    ]
    return len(rows), moves


def _reset_behind(conn: Connection, from_position: int) -> list[str]:
    """Set back to the start every behind projection that has read the log at or past
    ``from_position`` (it would miss an event moved below its position, and apply
    another a second time)."""
    reset = []
    # Locked: a catch-up batch in flight (which holds its projection's row) finishes
    # first, and saves the position it reached before this reads it.
    for name, position, live in conn.execute(_TRACKING_FOR_UPDATE):
        if not live and position >= from_position:
            registry.set_behind(conn, name, 0)
            log.warning(
                "projection %r was catching up past position %d, which repair moves: "
                "it replays the log from the start",
                name,
                from_position,
            )
            reset.append(name)
    return reset


def _repair_tx(
    store: EventStore, conn: Connection, *, stream_id: str, dry_run: bool
) -> tuple[RepairedStream, list[str]] | None:
    if not dry_run:
        store.lock_streams(conn, (stream_id,))  # first: no writer of the session meanwhile
    events, moves = _moves(conn, stream_id)
    if not moves:
        return None  # in order (repaired meanwhile, or never out of it)
    first = min(position for _, position in moves)
    repaired = RepairedStream(stream_id, events, len(moves), first)
    if dry_run:
        return repaired, []
    reset = _reset_behind(conn, first)
    versions = [version for version, _ in moves]
    conn.execute(_SET_ASIDE, {"sid": stream_id, "versions": versions})
    conn.execute(
        _RENUMBER,
        [{"sid": stream_id, "at_version": v, "new_position": p} for v, p in moves],
    )
    log.warning(
        "session %r: %d of its %d events renumbered in version order (positions from %d)",
        stream_id,
        len(moves),
        events,
        first,
    )
    return repaired, reset


async def repair_positions(store: EventStore, *, dry_run: bool = False) -> RepairReport:
    """Renumber the positions of every session whose positions do not follow its
    versions (see the module docstring); with ``dry_run``, only say which."""
    await store.ensure_tables()
    candidates = await store.run(lambda conn: list(conn.execute(_OUT_OF_ORDER).scalars()))
    streams: list[RepairedStream] = []
    projections_reset: list[str] = []
    for stream_id in candidates:
        done = await store.run(
            partial(_repair_tx, store, stream_id=stream_id, dry_run=dry_run), write=not dry_run
        )
        if done is None:
            continue
        streams.append(done[0])
        projections_reset.extend(name for name in done[1] if name not in projections_reset)
    return RepairReport(dry_run, tuple(streams), tuple(projections_reset))

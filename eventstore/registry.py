"""The projections a database keeps, and bringing them up to date.

The set of projections is a property of the database, not of whoever opened it. Each
row of ``convstore_tracking`` names one projection the database has; a projection is

* **live**: every append, whatever process or class makes it, applies its events to
  the projection in the append's own transaction (so its tables are exact at every
  commit and no per-append bookkeeping is needed), or
* **behind**: its tables hold the log up to ``position`` (it was just added to a
  database that already has a log, it is being rebuilt, or an older release wrote
  tables of an older shape). Appends skip it; :func:`catch_up` replays the log after
  ``position`` into it and makes it live.

Every change to the live set bumps ``convstore_head.generation``. The append reads
the generation in the statement that reserves its positions (that row is locked for
the rest of the transaction anyway): a writer whose idea of the live set is stale
sees a different generation, rolls back and reloads the set before trying again, so
no append ever misses a projection.

Which code maintains a projection is found by name: projections passed to
``EventStore(projectors=...)``, those registered with :func:`register_projector`, and
those the installed distributions declare under the ``convstore.projections`` entry
point group (convstore's own history, branch and usage projections are declared
there, which is how a bare ``EventStore`` gets them without importing a layer above
it). A database that keeps a projection this process cannot find refuses appends
with a SchemaError rather than letting that projection silently fall behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import ClassVar

from sqlalchemy import Connection, insert, inspect, select, update

from . import schema
from .errors import SchemaError
from .records import ApplyFunction, BaseProjector, Projector, RecordedEvent, Rows

LOG = logging.getLogger("convstore.projections")

ENTRY_POINT_GROUP = "convstore.projections"

_registered: dict[str, BaseProjector] = {}
_entry_points_loaded = False
_lock = threading.RLock()  # loading an entry point may register another projector


def adopt(projector: Projector) -> BaseProjector:
    """``projector`` as convstore keeps it: a :class:`BaseProjector` as it is; one that
    only implements the :class:`~eventstore.records.Projector` protocol, wrapped once,
    its optional abilities (``reads_positions``, ``replay``) read here.

    The one place a projector enters: the registry (:func:`register_projector`, the
    entry points) and a store (``EventStore(projectors=...)``, ``keep``) adopt every
    projector they are given, and nothing else asks what a projector can do."""
    if isinstance(projector, BaseProjector):
        return projector
    if getattr(projector, "reads_positions", True):
        return _Adapted(projector)
    return _AdaptedNoPositions(projector)


class _Adapted(BaseProjector):
    """A protocol-only projector, with the optional abilities it has (see :func:`adopt`)."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector
        self.name = projector.name
        self.schema_version = projector.schema_version
        self.metadata = projector.metadata
        self._replay: ApplyFunction = getattr(projector, "replay", projector.apply)

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        self.projector.apply(conn, events)

    def replay(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        self._replay(conn, events)

    def reset(self, conn: Connection) -> None:
        self.projector.reset(conn)

    def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
        return self.projector.expected_rows(stream_id, events)

    def live_rows(self, conn: Connection, stream_id: str) -> Rows:
        return self.projector.live_rows(conn, stream_id)

    def stream_ids(self, conn: Connection) -> set[str]:
        return self.projector.stream_ids(conn)

    def __repr__(self) -> str:
        return repr(self.projector)


class _AdaptedNoPositions(_Adapted):
    """An adapted projector that declared ``reads_positions = False``."""

    reads_positions: ClassVar[bool] = False


def register_projector(projector: Projector, *, replace: bool = True) -> None:
    """Make ``projector`` known to every store of this process, by its name."""
    adopted = adopt(projector)
    with _lock:
        if replace:
            _registered[adopted.name] = adopted
        else:
            _registered.setdefault(adopted.name, adopted)


def known_projectors() -> dict[str, BaseProjector]:
    """Every projector this process can maintain, by name (entry points loaded once)."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        with _lock:
            if not _entry_points_loaded:
                for entry in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
                    try:
                        loaded = entry.load()
                    except ImportError as error:  # an uninstalled optional part
                        LOG.warning("projection entry point %s not loaded: %s", entry, error)
                        continue
                    projector = adopt(loaded() if callable(loaded) else loaded)
                    _registered.setdefault(projector.name, projector)
                _entry_points_loaded = True
    return dict(_registered)


def default_projectors() -> tuple[BaseProjector, ...]:
    """What a store opened without ``projectors=`` keeps: every known projection."""
    return tuple(known_projectors().values())


@dataclass(frozen=True, slots=True)
class TrackingRow:
    name: str
    position: int
    live: bool


@dataclass(frozen=True, slots=True)
class LiveSet:
    """The live projections of a database at one generation."""

    generation: int
    names: frozenset[str]


def read_tracking(conn: Connection) -> dict[str, TrackingRow]:
    t = schema.tracking
    return {
        row.projection: TrackingRow(row.projection, int(row.position), bool(row.live))
        for row in conn.execute(select(t.c.projection, t.c.position, t.c.live))
    }


def read_generation(conn: Connection) -> int:
    h = schema.head
    return int(conn.execute(select(h.c.generation).where(h.c.name == schema.HEAD_ROW)).scalar_one())


def live_set(conn: Connection) -> LiveSet:
    rows = read_tracking(conn)
    return LiveSet(read_generation(conn), frozenset(n for n, r in rows.items() if r.live))


def bump_generation(conn: Connection) -> None:
    h = schema.head
    conn.execute(update(h).where(h.c.name == schema.HEAD_ROW).values(generation=h.c.generation + 1))


def add_projection(conn: Connection, projector: Projector) -> None:
    """Record that the database keeps ``projector`` (behind, at position 0)."""
    conn.execute(insert(schema.tracking).values(projection=projector.name, position=0, live=False))
    LOG.info("projection %r added to the database; it will be caught up", projector.name)


def set_behind(conn: Connection, name: str, position: int) -> None:
    """Take a projection out of the live set; its tables hold the log up to ``position``."""
    t = schema.tracking
    conn.execute(update(t).where(t.c.projection == name).values(position=position, live=False))
    bump_generation(conn)


def has_tables(conn: Connection, projector: Projector) -> bool:
    inspector = inspect(conn)
    return all(inspector.has_table(table.name) for table in projector.metadata.sorted_tables)


async def catch_up(
    run_write: Callable[[Callable[[Connection], int]], Awaitable[int]],
    lock_log: Callable[[Connection], None],
    replay: Callable[[Connection, BaseProjector, int, int | None], int],
    projector: BaseProjector,
    *,
    batch: int = 5000,
) -> int:
    """Replay the log into ``projector`` if it is behind, and make it live.

    ``run_write(fn)`` runs ``fn`` in a write transaction; ``replay(conn, projector,
    after, limit)`` feeds the projector's ``replay`` the log after ``after`` (at most
    ``limit`` events) and returns the last position fed. Batches run without the log
    lock (appends go on; they skip a projection that is behind), the last one under
    it, so nothing can be appended between the last event replayed and the projection
    becoming live. The tracking row is locked by each batch (two processes catching
    up the same projection take turns) and saved after it: an interrupted catch-up
    resumes where it stopped. Returns the position the projection is live at.
    """

    def batch_tx(conn: Connection) -> int:
        row = _lock_tracking(conn, projector.name)
        if row is None or row.live:
            return -1
        if row.position == 0:  # from the start: whatever the tables hold goes
            projector.reset(conn)
        last = replay(conn, projector, row.position, batch)
        if last == row.position:
            return -1  # nothing left but what the locked last step will see
        _save_position(conn, projector.name, last)
        return last

    while await run_write(batch_tx) >= 0:
        pass

    def finish_tx(conn: Connection) -> int:
        lock_log(conn)
        row = _lock_tracking(conn, projector.name)
        if row is None or row.live:
            return -1
        last = replay(conn, projector, row.position, None)
        t = schema.tracking
        conn.execute(
            update(t).where(t.c.projection == projector.name).values(position=last, live=True)
        )
        bump_generation(conn)
        return last

    last = await run_write(finish_tx)
    if last >= 0:
        LOG.info("projection %r is live (caught up to position %d)", projector.name, last)
    return last


def _lock_tracking(conn: Connection, name: str) -> TrackingRow | None:
    t = schema.tracking
    row = conn.execute(
        select(t.c.projection, t.c.position, t.c.live)
        .where(t.c.projection == name)
        .with_for_update()
    ).first()
    return None if row is None else TrackingRow(row.projection, int(row.position), bool(row.live))


def _save_position(conn: Connection, name: str, position: int) -> None:
    t = schema.tracking
    conn.execute(update(t).where(t.c.projection == name).values(position=position))


def resolve(
    names: Iterable[str], requested: Sequence[BaseProjector]
) -> tuple[tuple[BaseProjector, ...], tuple[str, ...]]:
    """The projector objects for ``names`` (requested ones first), and unknown names."""
    by_name = {p.name: p for p in requested}
    known = None
    found: list[BaseProjector] = []
    unknown: list[str] = []
    for name in sorted(names):
        projector = by_name.get(name)
        if projector is None:
            known = known if known is not None else known_projectors()
            projector = known.get(name)
        if projector is None:
            unknown.append(name)
        else:
            found.append(projector)
    return tuple(found), tuple(unknown)


def unknown_error(unknown: Sequence[str]) -> SchemaError:
    return SchemaError(
        f"this database keeps the projection(s) {', '.join(map(repr, unknown))}, which this "
        "process does not know: import the module that defines them (or pass them in "
        "projectors=) so that appends keep them current"
    )

"""Rebuilding and verifying projections from the log (projections are disposable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

from sqlalchemy import Connection, select

from eventstore import EventStore, InvalidArgumentError, Projector, replay_into
from eventstore.registry import set_behind
from eventstore.schema import tracking


@runtime_checkable
class RebuildableProjector(Projector, Protocol):
    """A projector that can build itself into scratch tables and list its rows."""

    def scratch(self) -> Self: ...

    def snapshot(self, conn: Connection) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]: ...


@dataclass(frozen=True, slots=True)
class Difference:
    """One row where the live table and a rebuild from the log disagree."""

    projection: str
    table: str
    key: tuple[Any, ...]
    live: tuple[Any, ...] | None
    rebuilt: tuple[Any, ...] | None

    def __str__(self) -> str:
        if self.live is None:
            what = "missing from the live table"
        elif self.rebuilt is None:
            what = "in the live table but not in the log"
        else:
            what = f"differs: live {self.live!r}, rebuilt {self.rebuilt!r}"
        return f"{self.projection}.{self.table} {self.key!r}: {what}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify` found: no differences means the projections are exact."""

    events_replayed: int
    differences: tuple[Difference, ...]

    @property
    def ok(self) -> bool:
        return not self.differences


def _projectors(store: EventStore) -> Sequence[RebuildableProjector]:
    found = [p for p in store.projectors if isinstance(p, RebuildableProjector)]
    if len(found) != len(store.projectors):
        raise InvalidArgumentError("verify needs projectors with scratch() and snapshot()")
    return found


async def rebuild(store: EventStore, *, progress: Callable[[int], None] | None = None) -> int:
    """Empty every projection of ``store`` and replay the whole log into it.

    Appends go on while it runs (they skip a projection that is behind, and the last
    batch is replayed under the log's lock); reads of a projection being rebuilt see
    it as far as it has been caught up. Interrupted, it resumes the next time a store
    opens the database. Returns the log's head position; ``progress`` is called with
    the number of events of each batch.
    """
    await store.ensure_tables()
    projectors = store.projectors

    def reset_tx(conn: Connection) -> int:
        store.lock_log(conn)
        for projector in projectors:
            projector.reset(conn)
            set_behind(conn, projector.name, 0)
        return store.committed_position(conn)

    await store.run(reset_tx, write=True)
    await store.catch_up(projectors, progress=progress)
    return await store.head_position()


async def verify(
    store: EventStore, *, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Rebuild every projection into scratch tables and compare with the live tables.

    Reports every differing row, and a tracking row that is not at the log's head.
    """
    pairs = [(p, p.scratch()) for p in _projectors(store)]
    for _, scratch in pairs:
        await store.run(scratch.metadata.create_all, write=True)
    try:

        def compare_tx(conn: Connection) -> VerifyReport:
            store.lock_log(conn)
            last = store.committed_position(conn)
            tracked = {
                row.projection: last if row.live else row.position
                for row in conn.execute(
                    select(tracking.c.projection, tracking.c.position, tracking.c.live)
                )
            }
            found: list[Difference] = []
            for live, scratch in pairs:
                scratch.reset(conn)
                replay_into(conn, [scratch], progress=progress)
                if tracked.get(live.name) != last:
                    found.append(
                        Difference(
                            live.name, "tracking", (live.name,), (tracked.get(live.name),), (last,)
                        )
                    )
                found.extend(_diff(live.name, live.snapshot(conn), scratch.snapshot(conn)))
            return VerifyReport(events_replayed=last, differences=tuple(found))

        return await store.run(compare_tx, write=True)
    finally:
        for _, scratch in pairs:
            await store.run(scratch.metadata.drop_all, write=True)


def _diff(
    projection: str,
    live: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]],
    rebuilt: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]],
) -> list[Difference]:
    found = []
    for table in sorted(live.keys() | rebuilt.keys()):
        a, b = live.get(table, {}), rebuilt.get(table, {})
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                found.append(Difference(projection, table, key, a.get(key), b.get(key)))
    return found

"""Rebuilding and verifying projections from the log (projections are disposable)."""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from eventstore import EventStore, Projector, RecordedEvent, Rows, schema
from eventstore.audit import Finding, decode_row, scan_streams
from eventstore.registry import set_behind
from eventstore.schema import tracking


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

    events_replayed: int  # the events folded (a count, not a position)
    differences: tuple[Difference, ...]
    head_position: int = 0  # the log's last position in the snapshot compared

    @property
    def ok(self) -> bool:
        return not self.differences


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
    """Compare every projection of ``store`` with a fold of the log, one stream at a time.

    For each stream, each projector's ``expected_rows`` (the pure fold of the stream's
    events) is compared with its ``live_rows``; rows of streams the log does not have,
    and tracking rows that are not at the log's head, are differences too. It reads one
    consistent snapshot on a connection of its own (appends continue), writes nothing,
    holds one stream in memory at a time, and any number of runs can go at once.
    """
    check = ProjectionCheck(store.projectors)

    def compare(conn: Connection) -> VerifyReport:
        last = store.committed_position(conn)
        seen: set[str] = set()
        folded = 0
        for rows in scan_streams(conn):
            events = [decode_row(row) for row in rows]
            seen.add(events[0].stream_id)
            check.compare_stream(conn, events[0].stream_id, events)
            folded += len(events)
            if progress is not None:
                progress(len(events))
        check.compare_rest(conn, seen)
        return VerifyReport(folded, tuple(check.differences), head_position=last)

    return await store.read_snapshot(compare)


class ProjectionCheck:
    """Projections against a fold of the log, one stream at a time (for verify and audit).

    As an audit :class:`~eventstore.audit.StreamCheck` it turns each difference into a
    finding that names the session and the version the projection was compared at.
    """

    def __init__(self, projectors: Sequence[Projector]) -> None:
        self.projectors = tuple(projectors)
        self.differences: list[Difference] = []

    def compare_stream(
        self, conn: Connection, stream_id: str, events: Sequence[RecordedEvent]
    ) -> list[Difference]:
        found: list[Difference] = []
        for projector in self.projectors:
            expected = projector.expected_rows(stream_id, events)
            found.extend(_diff(projector.name, projector.live_rows(conn, stream_id), expected))
        self.differences.extend(found)
        return found

    def compare_rest(self, conn: Connection, stream_ids: Set[str]) -> list[Difference]:
        """Rows of streams the log does not have, and projections behind the head."""
        found: list[Difference] = []
        e = schema.events  # the last position (on PostgreSQL positions have gaps)
        last = int(conn.execute(select(func.coalesce(func.max(e.c.position), 0))).scalar_one())
        # A live projection is kept by every append; one that is not is behind (being
        # caught up) and holds the log only up to its tracking position.
        tracked = {
            row.projection: last if row.live else row.position
            for row in conn.execute(
                select(tracking.c.projection, tracking.c.position, tracking.c.live)
            )
        }
        names = sorted(tracked.keys() | {p.name for p in self.projectors})
        for name in names:
            if tracked.get(name) != last:
                found.append(Difference(name, "tracking", (name,), (tracked.get(name),), (last,)))
        for projector in self.projectors:
            for sid in sorted(projector.stream_ids(conn) - stream_ids):
                for table, rows in projector.live_rows(conn, sid).items():
                    if not rows:
                        continue
                    found.append(
                        Difference(projector.name, table, (sid,), (f"{len(rows)} row(s)",), None)
                    )
        self.differences.extend(found)
        return found

    # -- as an audit StreamCheck ------------------------------------------------------

    def check_stream(
        self, conn: Connection, stream_id: str, events: Sequence[RecordedEvent]
    ) -> list[Finding]:
        version = events[-1].version
        return [
            Finding(stream_id, version, f"projection {d}", check="projection")
            for d in self.compare_stream(conn, stream_id, events)
        ]

    def finish(self, conn: Connection, stream_ids: Set[str]) -> list[Finding]:
        findings = []
        for d in self.compare_rest(conn, stream_ids):
            live = d.live[0] if d.live else None
            if d.table == "tracking":
                findings.append(
                    Finding(
                        None,
                        None,
                        f"projection {d.projection} is behind: it holds the log up to position "
                        f"{live}, but the head is {d.rebuilt[0] if d.rebuilt else None}",
                        check="projection",
                    )
                )
            else:
                findings.append(
                    Finding(
                        d.key[0],
                        None,
                        f"projection {d.projection}.{d.table} has {live} for a session "
                        "the log does not have",
                        check="projection",
                    )
                )
        return findings


def _diff(projection: str, live: Rows, rebuilt: Rows) -> list[Difference]:
    found = []
    for table in sorted(live.keys() | rebuilt.keys()):
        a, b = live.get(table, {}), rebuilt.get(table, {})
        if a == b:  # the usual case, compared in C
            continue
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                found.append(Difference(projection, table, key, a.get(key), b.get(key)))
    return found

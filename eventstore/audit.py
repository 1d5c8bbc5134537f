"""Audit: check the log itself, from the stored fields, in one consistent snapshot.

:func:`audit` reads every event of every stream, in order, and reports each thing that
is wrong as a :class:`Finding` naming the session, the version and the problem:

* the hash chain, recomputed from the stored fields (:mod:`eventstore.chain`): an event
  whose stored hash is not ``H(previous stored hash, its fields)`` was edited (its
  payload, type, id, time or hash), and its neighbours show where rows were swapped;
* version contiguity (1, 2, 3 … per stream) and positions increasing with versions
  (positions are not hashed: :mod:`eventstore.repair` puts their order right);
* global positions (SQLite, MariaDB, where they are gapless): every position up to
  the head holds an event, except those of sessions removed on purpose (retention /
  delete leave a tombstone saying how many). On PostgreSQL positions come from
  transaction ids and have gaps (:mod:`eventstore.backends.postgres`): an event removed
  there shows in its stream (versions, chain, ``convstore_streams``, checkpoints);
* decodability of every payload;
* ``convstore_streams`` against the log (version, head hash, times), both ways;
* optionally, exported checkpoints (:mod:`eventstore.checkpoints`): a stream whose
  recomputed chain no longer reaches the hash a checkpoint recorded was rewritten,
  even if every hash after the edit was recomputed to match.

The checks of projections live in ``projections.maintenance`` (dependencies flow
``sessions -> projections -> eventstore``); they plug in as :class:`StreamCheck`\\ s so
one pass over the log serves both. The snapshot is read on a connection of its own
(:mod:`eventstore.snapshot`): appends continue while it runs. Memory holds one stream
at a time plus a small entry per session (its streams row), never the whole log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, Row, func, inspect, select, tuple_

from . import schema
from .chain import Link, walk_chain
from .errors import DecodeError
from .records import RecordedEvent, recorded_from_row, to_datetime
from .store import EventStore

# Events read per query while scanning (keyset pages of the (stream_id, version) index).
BATCH_SIZE = 2000
# Gap ranges listed by name in a finding about missing positions (the rest are counted).
MAX_LISTED_GAPS = 10


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with the stored data: where (session, version) and what."""

    stream_id: str | None
    version: int | None
    problem: str
    check: str = "log"

    def __str__(self) -> str:
        if self.stream_id is None:
            where = "log"
        else:
            where = f"session {self.stream_id!r}"
            if self.version is not None:
                where += f" v{self.version}"
        return f"{where}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stream's head as it was when a checkpoint was taken."""

    stream_id: str
    version: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What :func:`audit` read and found. ``ok`` means no finding at all."""

    streams: int
    events: int
    head_position: int
    removed_streams: int
    findings: tuple[Finding, ...]
    checkpoints_checked: int = 0
    notes: tuple[str, ...] = ()
    heads: Mapping[str, Checkpoint] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings


class StreamCheck(Protocol):
    """More checks run on each stream during the audit's one pass (e.g. projections).

    ``check_stream`` gets a stream's decoded events (only when every event of it
    decoded); ``finish`` runs once at the end with every stream id the log has.
    Both read through ``conn``, the audit's snapshot, and must not write.
    """

    def check_stream(
        self, conn: Connection, stream_id: str, events: Sequence[RecordedEvent]
    ) -> Iterable[Finding]: ...

    def finish(self, conn: Connection, stream_ids: Set[str]) -> Iterable[Finding]: ...


# -- reading the log one stream at a time ----------------------------------------------


def scan_streams(conn: Connection, *, batch_size: int = BATCH_SIZE) -> Iterator[list[Row[Any]]]:
    """Every stream's event rows, ordered by version, one stream at a time.

    Pages through the ``(stream_id, version)`` index by key, so no query holds more
    than ``batch_size`` rows and no server-side cursor is needed.
    """
    e = schema.events
    key = tuple_(e.c.stream_id, e.c.version)
    last: tuple[str, int] | None = None
    current: list[Row[Any]] = []
    while True:
        query = select(e).order_by(e.c.stream_id, e.c.version).limit(batch_size)
        if last is not None:
            query = query.where(key > tuple_(*last))
        rows = conn.execute(query).all()
        for row in rows:
            if current and current[0].stream_id != row.stream_id:
                yield current
                current = []
            current.append(row)
        if len(rows) < batch_size:
            break
        last = (rows[-1].stream_id, rows[-1].version)
    if current:
        yield current


decode_row = recorded_from_row  # a stored row as a RecordedEvent (DecodeError if unreadable)


def has_tombstones(conn: Connection) -> bool:
    """Whether the tombstone table exists (databases created before it do not have it)."""
    return inspect(conn).has_table(schema.tombstones.name)


# -- one stream ---------------------------------------------------------------------


@dataclass(slots=True)
class _StreamResult:
    findings: list[Finding]
    events: list[RecordedEvent] | None  # None when some event did not decode
    head: Checkpoint


def _check_stream(
    rows: Sequence[Row[Any]],
    checkpoint: Checkpoint | None,
    *,
    decode: bool,
) -> _StreamResult:
    sid = rows[0].stream_id
    found: list[Finding] = []
    events: list[RecordedEvent] | None = [] if decode else None
    last_position = 0
    for link in walk_chain(rows):
        row = link.event
        found.extend(_link_findings(link, last_position))
        at_checkpoint = checkpoint is not None and row.version == checkpoint.version
        if at_checkpoint and checkpoint is not None and link.recomputed != checkpoint.hash:
            found.append(
                Finding(
                    sid,
                    row.version,
                    "the history up to this version differs from the checkpoint taken "
                    "of it (changed since, even if every hash was recomputed to match)",
                    check="checkpoint",
                )
            )
        if events is not None:
            try:
                events.append(decode_row(row))
            except DecodeError as error:
                found.append(Finding(sid, row.version, f"undecodable event: {error}"))
                events = None
        last_position = row.position
    last = rows[-1]
    if checkpoint is not None and last.version < checkpoint.version:
        found.append(
            Finding(
                sid,
                last.version,
                f"the log ends here, but a checkpoint recorded v{checkpoint.version}: "
                "events were removed",
                check="checkpoint",
            )
        )
    return _StreamResult(found, events, Checkpoint(sid, last.version, str(last.hash)))


def _link_findings(link: Link, last_position: int) -> list[Finding]:
    """What is wrong with one event's place in its stream: its version, its position,
    its hash."""
    row, expected = link.event, link.expected_version
    sid, version = row.stream_id, row.version
    found = []
    if version > expected:
        missing = f"v{expected}" if version == expected + 1 else f"v{expected}..v{version - 1}"
        found.append(Finding(sid, version, f"{missing} missing before this event"))
    elif version < expected:
        found.append(Finding(sid, version, f"out of sequence (expected v{expected})"))
    if row.position <= last_position:
        found.append(
            Finding(
                sid,
                version,
                f"position {row.position} is not after the previous event's "
                f"({last_position}): events were reordered (where the chain verifies, "
                "'convstore DB repair' puts positions back in version order)",
            )
        )
    if link.error is not None:
        found.append(Finding(sid, version, f"cannot recompute the hash: {link.error}"))
    elif not link.sound:
        found.append(
            Finding(
                sid,
                version,
                "stored hash does not match the event's fields and the previous hash "
                "(the event, or the hash, was changed)",
            )
        )
    return found


def _compare_stream_row(rows: Sequence[Row[Any]], stream: Row[Any] | None) -> list[Finding]:
    first, last = rows[0], rows[-1]
    sid = first.stream_id
    if stream is None:
        return [Finding(sid, last.version, "has events but no row in convstore_streams")]
    found = []
    if stream.version != last.version:
        found.append(
            Finding(
                sid,
                last.version,
                f"convstore_streams says version {stream.version}, the log ends at v{last.version}",
            )
        )
    elif stream.head_hash != last.hash:
        found.append(
            Finding(sid, last.version, "convstore_streams head hash differs from the last event's")
        )
    if stream.updated_at != last.recorded_at or stream.created_at != first.recorded_at:
        found.append(
            Finding(
                sid, None, "convstore_streams times differ from the first and last events' times"
            )
        )
    return found


# -- the whole log --------------------------------------------------------------------


def _position_findings(
    conn: Connection, head: int, events: int, removed_events: int
) -> list[Finding]:
    e = schema.events
    found: list[Finding] = []
    highest = conn.execute(select(func.max(e.c.position))).scalar() or 0
    if highest > head:
        found.append(Finding(None, None, f"an event has position {highest}, after the head {head}"))
    missing = head - events
    if missing == removed_events or missing < 0:  # (< 0: positions after the head, above)
        return found
    gaps = _gaps(conn, head)
    listed = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in gaps[:MAX_LISTED_GAPS])
    more = f" and {len(gaps) - MAX_LISTED_GAPS} more ranges" if len(gaps) > MAX_LISTED_GAPS else ""
    found.append(
        Finding(
            None,
            None,
            f"{missing:,} positions up to the head ({head:,}) hold no event, but sessions "
            f"removed on purpose account for {removed_events:,}: events were deleted "
            f"(positions without an event: {listed}{more})",
        )
    )
    return found


def _gaps(conn: Connection, head: int) -> list[tuple[int, int]]:
    """Ranges of positions up to ``head`` that hold no event (at most a few hundred)."""
    e = schema.events
    # LAG without a default (MariaDB has none): the first event's "previous" is NULL.
    lag = func.lag(e.c.position).over(order_by=e.c.position)
    previous = func.coalesce(lag, 0).label("previous")
    inner = select(e.c.position, previous).subquery()
    rows = conn.execute(
        select(inner.c.previous, inner.c.position)
        .where(inner.c.position - inner.c.previous > 1)
        .order_by(inner.c.position)
        .limit(MAX_LISTED_GAPS + 1000)
    ).all()
    gaps = [(int(p) + 1, int(n) - 1) for p, n in rows]
    highest = conn.execute(select(func.max(e.c.position))).scalar() or 0
    if highest < head:
        gaps.append((highest + 1, head))
    return gaps


def audit_snapshot(
    conn: Connection,
    *,
    checks: Sequence[StreamCheck] = (),
    checkpoints: Mapping[str, Checkpoint] | None = None,
    progress: Callable[[int], None] | None = None,
    collect_heads: bool = False,
    dense_positions: bool = True,
) -> AuditReport:
    """Audit through ``conn``, which must read one consistent snapshot (see :func:`audit`).

    Without ``dense_positions`` (PostgreSQL: positions come from transaction ids and
    have gaps), the head is the last position and positions are not checked for gaps;
    removed events are still found per stream (versions, chain, streams row,
    checkpoints)."""
    s, t = schema.streams, schema.tombstones
    if dense_positions:
        head = int(conn.execute(select(schema.head.c.position)).scalar_one())
    else:
        e = schema.events
        head = int(conn.execute(select(func.coalesce(func.max(e.c.position), 0))).scalar_one())
    streams = {row.stream_id: row for row in conn.execute(select(s))}
    tombstones: dict[str, list[Row[Any]]] = {}
    if has_tombstones(conn):
        for row in conn.execute(select(t).order_by(t.c.stream_id, t.c.removed_at)):
            tombstones.setdefault(row.stream_id, []).append(row)
    findings: list[Finding] = []
    heads: dict[str, Checkpoint] = {}
    seen: set[str] = set()
    events = 0
    for rows in scan_streams(conn):
        sid = rows[0].stream_id
        seen.add(sid)
        events += len(rows)
        cp = checkpoints.get(sid) if checkpoints else None
        result = _check_stream(rows, cp, decode=bool(checks))
        findings.extend(result.findings)
        findings.extend(_compare_stream_row(rows, streams.get(sid)))
        if result.events is not None:
            for check in checks:
                findings.extend(check.check_stream(conn, sid, result.events))
        if collect_heads:
            heads[sid] = result.head
        if progress is not None:
            progress(len(rows))
    for sid in sorted(streams.keys() - seen):
        row = streams[sid]
        why = " (it has a tombstone, yet its streams row is there)" if sid in tombstones else ""
        findings.append(
            Finding(
                sid,
                row.version,
                f"convstore_streams has it at version {row.version}, but the log has no event "
                f"of it: the session was deleted outside convstore{why}",
            )
        )
    for check in checks:
        findings.extend(check.finish(conn, seen))
    removed_events = sum(row.version for rows in tombstones.values() for row in rows)
    if dense_positions:
        findings.extend(_position_findings(conn, head, events, removed_events))
    notes: list[str] = []
    if checkpoints:
        findings.extend(_missing_checkpointed(checkpoints, seen, tombstones, notes))
    return AuditReport(
        streams=len(seen),
        events=events,
        head_position=head,
        removed_streams=sum(len(rows) for rows in tombstones.values()),
        findings=tuple(findings),
        checkpoints_checked=len(checkpoints or {}),
        notes=tuple(notes),
        heads=heads,
    )


def _missing_checkpointed(
    checkpoints: Mapping[str, Checkpoint],
    seen: Set[str],
    tombstones: Mapping[str, Sequence[Row[Any]]],
    notes: list[str],
) -> Iterator[Finding]:
    for sid in sorted(checkpoints.keys() - seen):
        cp = checkpoints[sid]
        removed = [row for row in tombstones.get(sid, ()) if row.version >= cp.version]
        if not removed:
            yield Finding(
                sid,
                cp.version,
                "a checkpoint recorded this session, but the log has no event of it and no "
                "tombstone says it was removed",
                check="checkpoint",
            )
            continue
        tomb = removed[0]
        if tomb.version == cp.version and tomb.head_hash != cp.hash:
            yield Finding(
                sid,
                cp.version,
                "its tombstone's head hash differs from the checkpoint's",
                check="checkpoint",
            )
        elif tomb.version > cp.version:
            notes.append(
                f"session {sid!r} was removed at v{tomb.version} "
                f"({to_datetime(tomb.removed_at):%Y-%m-%d %H:%M:%S} UTC), after the checkpoint "
                f"(v{cp.version}): its history can no longer be compared"
            )


async def audit(
    store: EventStore,
    *,
    checks: Sequence[StreamCheck] = (),
    checkpoints: Mapping[str, Checkpoint] | None = None,
    progress: Callable[[int], None] | None = None,
    collect_heads: bool = False,
) -> AuditReport:
    """Check the whole log of ``store`` (see the module's docstring) and report findings.

    Reads one consistent snapshot on a connection of its own: nothing is written and
    appends are not held up. ``checks`` add checks per stream (projections);
    ``checkpoints`` are stream heads exported earlier (:mod:`eventstore.checkpoints`);
    ``progress`` is called with the number of events of each stream checked.
    """
    return await store.read_snapshot(
        lambda conn: audit_snapshot(
            conn,
            checks=checks,
            checkpoints=checkpoints,
            progress=progress,
            collect_heads=collect_heads,
            dense_positions=store.dense_positions,
        )
    )


async def audit_stream(
    store: EventStore, stream_id: str, *, checks: Sequence[StreamCheck] = ()
) -> tuple[Finding, ...]:
    """The findings of :func:`audit` about one stream (its chain, versions, positions,
    decodability, its ``convstore_streams`` row, and ``checks``), from one snapshot.
    No finding: the stream is sound. Reads that stream only."""
    e, s = schema.events, schema.streams

    def check(conn: Connection) -> tuple[Finding, ...]:
        rows = conn.execute(select(e).where(e.c.stream_id == stream_id).order_by(e.c.version)).all()
        stream = conn.execute(select(s).where(s.c.stream_id == stream_id)).first()
        if not rows:
            if stream is None:
                return ()
            return (Finding(stream_id, None, "convstore_streams has a row but the log no event"),)
        result = _check_stream(rows, None, decode=True)
        found = result.findings + _compare_stream_row(rows, stream)
        if result.events is not None:
            for extra in checks:
                found += extra.check_stream(conn, stream_id, result.events)
        return tuple(found)

    return await store.read_snapshot(check)

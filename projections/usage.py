"""The usage projection: model usage per turn, per branch and per session.

Each ``UsageRecorded`` event is an increment spent answering one turn, named by its
*anchor*: the user message that starts the turn, as ``(owner branch, seq)`` of that
item (see :mod:`projections.history`). The rules:

* **The session's totals** count every recording, forever: usage is spent even if the
  turn is later popped, cleared, expired or its branch deleted.
* **A branch's figures** count the recordings whose anchor the branch's history still
  shows: its own turns and the turns it inherits (each counted once for the session,
  whatever the number of branches sharing it). A turn leaves a branch's figures when
  its user message leaves the branch's history.

So that a branch's figures cost the same at 10 and at 10,000 turns, the usage of each
owner branch is kept in anchor order with running totals (``cum_*``): what a segment
``(src, lo, hi]`` of a branch shows is the running total at ``hi`` minus the one at
``lo``, two index look-ups. Items are only ever deleted from the newest end of an
owner (history.py), so deleting their usage rows never changes an earlier running
total. The projection follows the branch structure itself (segments and how far each
owner is shared), with the history's own segment functions, so it is rebuilt from the
log alone: a pop that deletes a turn's user message deletes that turn's usage row,
and a pop of a shared item only narrows the popping branch's segments.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgspec
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    Select,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)

from eventstore import (
    MAIN_BRANCH,
    BranchCreated,
    BranchDeleted,
    ItemPopped,
    ItemsExpired,
    RecordedEvent,
    Rows,
    SessionCleared,
    UsageRecorded,
)
from eventstore.prepared import Prepared
from eventstore.schema import MYSQL_TABLE_OPTIONS, Blob, Key, StreamId

from .history import (
    OPEN,
    Segment,
    cleared_segments,
    expire_segments,
    fork_segments,
    segment_of,
    split_segments,
)

_encoder = msgspec.json.Encoder(order="sorted")
_segments_decoder = msgspec.json.Decoder(tuple[tuple[str, int, int], ...])
_details_decoder = msgspec.json.Decoder(dict[str, Any])


def add_details(a: Mapping[str, Any], b: Mapping[str, Any], sign: int = 1) -> dict[str, Any]:
    """``a + sign * b`` on the integer leaves of two nested detail dicts."""
    out: dict[str, Any] = dict(a)
    for key, value in b.items():
        mine = out.get(key)
        if isinstance(value, Mapping):
            out[key] = add_details(mine if isinstance(mine, Mapping) else {}, value, sign)
        elif isinstance(value, int) and not isinstance(value, bool):
            base = mine if isinstance(mine, int) and not isinstance(mine, bool) else 0
            out[key] = base + sign * value
    return out


def details_zero(details: Mapping[str, Any]) -> bool:
    return all(
        details_zero(v) if isinstance(v, Mapping) else not v or isinstance(v, bool)
        for v in details.values()
    )


@dataclass(frozen=True, slots=True)
class Tokens:
    """Requests and tokens (with their details), as the SDK's ``Usage`` counts them."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def plus(self, other: Tokens, sign: int = 1) -> Tokens:
        return Tokens(
            self.requests + sign * other.requests,
            self.input_tokens + sign * other.input_tokens,
            self.output_tokens + sign * other.output_tokens,
            self.total_tokens + sign * other.total_tokens,
            add_details(self.details, other.details, sign),
        )

    def minus(self, other: Tokens) -> Tokens:
        return self.plus(other, -1)

    @property
    def is_zero(self) -> bool:
        return not (
            self.requests or self.input_tokens or self.output_tokens or self.total_tokens
        ) and details_zero(self.details)

    @property
    def is_negative(self) -> bool:
        counts = (self.requests, self.input_tokens, self.output_tokens, self.total_tokens)
        return any(n < 0 for n in counts) or _any_negative(self.details)

    @classmethod
    def of_event(cls, event: UsageRecorded) -> Tokens:
        return cls(
            event.requests,
            event.input_tokens,
            event.output_tokens,
            event.total_tokens,
            add_details({}, event.details),
        )


def _any_negative(details: Mapping[str, Any]) -> bool:
    return any(
        _any_negative(v) if isinstance(v, Mapping) else isinstance(v, int) and v < 0
        for v in details.values()
    )


@dataclass(frozen=True, slots=True)
class Figures:
    """Usage over some turns: ``turns`` with usage, ``recordings`` made, and tokens."""

    turns: int = 0
    recordings: int = 0
    tokens: Tokens = field(default_factory=Tokens)

    def plus(self, other: Figures, sign: int = 1) -> Figures:
        return Figures(
            self.turns + sign * other.turns,
            self.recordings + sign * other.recordings,
            self.tokens.plus(other.tokens, sign),
        )


@dataclass(frozen=True, slots=True)
class BranchShape:
    """What the projection keeps of a branch: its segments and how far it is shared."""

    pinned: int = 0
    segments: tuple[Segment, ...] | None = None  # None: all of its own items

    def shown(self, branch_id: str) -> tuple[Segment, ...]:
        return ((branch_id, 0, OPEN),) if self.segments is None else self.segments


class _Ops(Protocol):
    """Where the rules keep their state: a dict (the pure fold) or the tables."""

    def shape(self, sid: str, bid: str) -> BranchShape: ...
    def save_shape(self, sid: str, bid: str, shape: BranchShape) -> None: ...
    def has_shape(self, sid: str, bid: str) -> bool: ...
    def known_branches(self, sid: str) -> set[str]: ...
    def drop_above(self, sid: str, owner: str, above: int) -> None: ...
    def record(
        self, sid: str, owner: str | None, seq: int, ordinal: int, tokens: Tokens
    ) -> None: ...


def apply_event(ops: _Ops, recorded: RecordedEvent) -> None:
    """One event's effect on usage (the one implementation of the rules)."""
    sid, version, event = recorded.stream_id, recorded.version, recorded.event
    match event:
        case UsageRecorded(anchor_branch=owner, anchor_seq=seq, turn=ordinal):
            ops.record(sid, owner, seq, ordinal, Tokens.of_event(event))
        case ItemPopped(seq=seq, branch_id=b):
            shape = ops.shape(sid, b)
            segments = shape.shown(b)
            found = segment_of(segments, seq)
            if found is None:
                return
            if found[0] == b and seq > shape.pinned:
                ops.drop_above(sid, b, seq - 1)  # the item (b's newest) is deleted
                return
            # Shared: the branch stops showing it. (The history splits at the item
            # before it; for sums, ``seq - 1`` bounds the same items.)
            ops.save_shape(sid, b, replace(shape, segments=split_segments(segments, seq, seq - 1)))
        case SessionCleared(branch_id=None):
            for b in ops.known_branches(sid) | {MAIN_BRANCH}:
                _clear(ops, sid, b, version)
        case SessionCleared(branch_id=str(b)):
            _clear(ops, sid, b, version)
        case ItemsExpired(upto_seq=upto, branch_id=b):
            shape = ops.shape(sid, b)
            ops.save_shape(sid, b, replace(shape, segments=expire_segments(shape.shown(b), upto)))
        case BranchCreated(branch_id=c, parent_branch_id=p, fork_seq=fork):
            segments = fork_segments(ops.shape(sid, p).shown(p), fork, c, version)
            for src, _lo, hi in segments[:-1]:
                held = ops.shape(sid, src)
                if hi > held.pinned:
                    ops.save_shape(sid, src, replace(held, pinned=hi))
            ops.save_shape(sid, c, replace(ops.shape(sid, c), segments=segments))
        case BranchDeleted(branch_id=b):
            shape = ops.shape(sid, b)
            ops.drop_above(sid, b, shape.pinned)
            ops.save_shape(sid, b, replace(shape, segments=()))
        case _:
            pass


def _clear(ops: _Ops, sid: str, b: str, version: int) -> None:
    shape = ops.shape(sid, b)
    ops.drop_above(sid, b, shape.pinned)
    if ops.has_shape(sid, b):
        ops.save_shape(sid, b, replace(shape, segments=cleared_segments(b, version)))


# -- the pure fold --------------------------------------------------------------------


@dataclass
class UsageState:
    """Everything the usage projection knows of one session (mutable, for folding)."""

    session: Figures | None = None
    shapes: dict[str, BranchShape] = field(default_factory=dict)
    turns: dict[str, dict[int, Figures]] = field(default_factory=dict)  # owner -> seq -> own
    ordinals: dict[tuple[str, int], int] = field(default_factory=dict)  # (owner, seq) -> n

    def shape(self, sid: str, bid: str) -> BranchShape:
        return self.shapes.get(bid) or BranchShape()

    def save_shape(self, sid: str, bid: str, shape: BranchShape) -> None:
        self.shapes[bid] = shape

    def has_shape(self, sid: str, bid: str) -> bool:
        return bid in self.shapes

    def known_branches(self, sid: str) -> set[str]:
        return set(self.shapes) | set(self.turns)

    def drop_above(self, sid: str, owner: str, above: int) -> None:
        rows = self.turns.get(owner, {})
        for seq in [s for s in rows if s > above]:
            del rows[seq]

    def record(self, sid: str, owner: str | None, seq: int, ordinal: int, tokens: Tokens) -> None:
        new_turn = 0
        if owner is not None:
            rows = self.turns.setdefault(owner, {})
            new_turn = int(seq not in rows)
            if new_turn:
                self.ordinals[(owner, seq)] = ordinal
            rows[seq] = (rows.get(seq) or Figures(turns=1)).plus(Figures(0, 1, tokens))
        self.session = (self.session or Figures()).plus(Figures(new_turn, 1, tokens))

    def running(self, owner: str) -> Iterator[tuple[int, Figures, Figures]]:
        """``(seq, own, running total)`` of an owner's turns in anchor order."""
        total = Figures()
        for seq, own in sorted(self.turns.get(owner, {}).items()):
            total = total.plus(own)
            yield seq, own, total


def fold(events: Iterable[RecordedEvent], state: UsageState | None = None) -> UsageState:
    """Fold the recorded events of one stream into its usage."""
    state = state or UsageState()
    for recorded in events:
        apply_event(state, recorded)
    return state


# -- the tables -----------------------------------------------------------------------

_TOKEN_COLUMNS = ("requests", "input_tokens", "output_tokens", "total_tokens")


def _figure_columns(prefix: str) -> list[Column[Any]]:
    names = ("turns", "recordings", *_TOKEN_COLUMNS)
    return [Column(f"{prefix}{n}", BigInteger, nullable=False) for n in names] + [
        Column(f"{prefix}details", Blob, nullable=False)
    ]


def _values(prefix: str, figures: Figures) -> dict[str, Any]:
    t = figures.tokens
    return {
        f"{prefix}turns": figures.turns,
        f"{prefix}recordings": figures.recordings,
        f"{prefix}requests": t.requests,
        f"{prefix}input_tokens": t.input_tokens,
        f"{prefix}output_tokens": t.output_tokens,
        f"{prefix}total_tokens": t.total_tokens,
        f"{prefix}details": _encoder.encode(t.details),
    }


def _figures(row: Mapping[Any, Any], prefix: str = "") -> Figures:
    requests, input_tokens, output_tokens, total_tokens = (
        int(row[f"{prefix}{n}"]) for n in _TOKEN_COLUMNS
    )
    details = _details_decoder.decode(bytes(row[f"{prefix}details"]))
    tokens = Tokens(requests, input_tokens, output_tokens, total_tokens, details)
    return Figures(int(row[f"{prefix}turns"]), int(row[f"{prefix}recordings"]), tokens)


def _named(table: Table, row: Sequence[Any]) -> dict[str, Any]:
    """A driver row of ``select(table)`` by column name."""
    return dict(zip(table.c.keys(), row, strict=True))


def _figures_tuple(f: Figures) -> tuple[Any, ...]:
    t = f.tokens
    counts = (f.turns, f.recordings, t.requests, t.input_tokens, t.output_tokens, t.total_tokens)
    return (*counts, t.details)


class UsageProjector:
    """Keeps the usage tables equal to :func:`fold` of the log.

    * ``convstore_usage_sessions``: each session's totals (every recording);
    * ``convstore_usage_turns``: per owner branch and anchor, the turn's own usage and
      the running totals of that owner up to it;
    * ``convstore_usage_branches``: segments and sharing of branches that have them.
    """

    name = "usage"
    schema_version = 1

    def __init__(self, *, prefix: str = "convstore") -> None:
        self.prefix = prefix
        self.metadata = m = MetaData()
        self.sessions = Table(
            f"{prefix}_usage_sessions",
            m,
            Column("stream_id", StreamId, primary_key=True),
            *_figure_columns(""),
            **MYSQL_TABLE_OPTIONS,
        )
        self.turns = t = Table(
            f"{prefix}_usage_turns",
            m,
            Column("stream_id", StreamId, primary_key=True),
            Column("branch_id", Key(255), primary_key=True),
            Column("anchor_seq", BigInteger, primary_key=True, autoincrement=False),
            Column("ordinal", BigInteger, nullable=False),  # the anchor's owner ordinal
            *_figure_columns(""),
            *_figure_columns("cum_"),
            sqlite_with_rowid=False,
            **MYSQL_TABLE_OPTIONS,
        )
        self.branches = b = Table(
            f"{prefix}_usage_branches",
            m,
            Column("stream_id", StreamId, primary_key=True),
            Column("branch_id", Key(255), primary_key=True),
            Column("pinned", BigInteger, nullable=False),
            Column("segments", Blob, nullable=True),
            **MYSQL_TABLE_OPTIONS,
        )
        sid, bid = bindparam("sid", type_=Key(255)), bindparam("bid", type_=Key(255))
        q = bindparam("q", type_=BigInteger)
        self._session = Prepared(self.session_query(sid))
        self._running_at = Prepared(self.running_query(sid, bid, q))
        self._turn = Prepared(self.turn_query(sid, bid, q))
        self._shape = Prepared(
            select(b.c.pinned, b.c.segments).where(b.c.stream_id == sid, b.c.branch_id == bid)
        )
        lo = bindparam("lo", type_=BigInteger)
        hi = bindparam("hi", type_=BigInteger)
        in_range = (t.c.stream_id == sid, t.c.branch_id == bid, t.c.anchor_seq > lo)
        own = [t.c[n] for n in ("turns", "recordings", *_TOKEN_COLUMNS, "details")]
        self._turn_range = Prepared(
            select(t.c.anchor_seq, t.c.ordinal, *own)
            .where(*in_range, t.c.anchor_seq <= hi)
            .order_by(t.c.anchor_seq)
        )
        self._turn_raw = Prepared(
            select(t.c.ordinal, *own[2:])
            .where(*in_range, t.c.anchor_seq <= hi)
            .order_by(t.c.anchor_seq)
        )
        self._later = Prepared(
            select(t).where(t.c.stream_id == sid, t.c.branch_id == bid, t.c.anchor_seq > q)
        )
        self._drop = Prepared(
            delete(t).where(t.c.stream_id == sid, t.c.branch_id == bid, t.c.anchor_seq > q)
        )

    # -- queries (built once; the query-plan test compiles the same ones) -----------

    def session_query(self, stream_id: Any) -> Select[Any]:
        """A session's totals: one primary-key look-up."""
        return select(self.sessions).where(self.sessions.c.stream_id == stream_id)

    def running_query(self, stream_id: Any, owner: Any, upto: Any) -> Select[Any]:
        """An owner's running totals at its last anchor ``<= upto``: one look-up at
        the end of a primary-key range."""
        t = self.turns
        return (
            select(t)
            .where(t.c.stream_id == stream_id, t.c.branch_id == owner, t.c.anchor_seq <= upto)
            .order_by(t.c.anchor_seq.desc())
            .limit(1)
        )

    def turn_query(self, stream_id: Any, owner: Any, seq: Any) -> Select[Any]:
        t = self.turns
        return select(t).where(
            t.c.stream_id == stream_id, t.c.branch_id == owner, t.c.anchor_seq == seq
        )

    # -- the append transaction ----------------------------------------------------

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        ops = _TableOps(self, conn)
        for recorded in events:
            apply_event(ops, recorded)

    def reset(self, conn: Connection) -> None:
        for table in (self.sessions, self.turns, self.branches):
            conn.execute(delete(table))

    # -- reads ---------------------------------------------------------------------

    def session_figures(self, conn: Connection, stream_id: str) -> Figures | None:
        """Everything the session spent (None if nothing was ever recorded)."""
        row = self._session.first(conn, {"sid": stream_id})
        return None if row is None else _figures(_named(self.sessions, row))

    def read_shape(self, conn: Connection, stream_id: str, branch_id: str) -> BranchShape | None:
        row = self._shape.first(conn, {"sid": stream_id, "bid": branch_id})
        if row is None:
            return None
        segments = None if row[1] is None else _segments_decoder.decode(bytes(row[1]))
        return BranchShape(int(row[0]), segments)

    def shape(self, conn: Connection, stream_id: str, branch_id: str) -> BranchShape:
        return self.read_shape(conn, stream_id, branch_id) or BranchShape()

    def running_at(self, conn: Connection, stream_id: str, owner: str, upto: int) -> Figures:
        row = self._running_at.first(conn, {"sid": stream_id, "bid": owner, "q": upto})
        return Figures() if row is None else _figures(_named(self.turns, row), "cum_")

    def branch_figures(self, conn: Connection, stream_id: str, branch_id: str) -> Figures:
        """Usage of the turns a branch shows: two look-ups per segment."""
        total = Figures()
        for src, lo, hi in self.shape(conn, stream_id, branch_id).shown(branch_id):
            total = total.plus(self.running_at(conn, stream_id, src, hi))
            if lo > 0:
                total = total.plus(self.running_at(conn, stream_id, src, lo), -1)
        return total

    def turn_figures(
        self, conn: Connection, stream_id: str, owner: str, seq: int
    ) -> Figures | None:
        row = self._turn.first(conn, {"sid": stream_id, "bid": owner, "q": seq})
        return None if row is None else _figures(_named(self.turns, row))

    def turn_rows(
        self, conn: Connection, stream_id: str, owner: str, lo: int, hi: int
    ) -> list[tuple[int, int, Figures]]:
        """``(seq, ordinal, own usage)`` of an owner's turns with usage in ``(lo, hi]``."""
        rows = self._turn_range.all(conn, {"sid": stream_id, "bid": owner, "lo": lo, "hi": hi})
        decode = _details_decoder.decode
        return [
            (
                int(seq),
                int(ordinal),
                Figures(int(turns), int(recs), Tokens(int(r), int(i), int(o), int(t), decode(d))),
            )
            for seq, ordinal, turns, recs, r, i, o, t, d in rows
        ]

    def turn_rows_raw(
        self, conn: Connection, stream_id: str, owner: str, lo: int, hi: int
    ) -> list[Any]:
        """``(ordinal, requests, input, output, total, details JSON)`` of an owner's
        turns with usage in ``(lo, hi]``, in order (for listing many turns fast)."""
        return self._turn_raw.all(conn, {"sid": stream_id, "bid": owner, "lo": lo, "hi": hi})

    # -- checking, one stream at a time ---------------------------------------------

    def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
        return state_rows(stream_id, fold(events))

    def live_rows(self, conn: Connection, stream_id: str) -> Rows:
        s, t, b = self.sessions, self.turns, self.branches
        sessions = conn.execute(select(s).where(s.c.stream_id == stream_id)).all()
        turns = conn.execute(select(t).where(t.c.stream_id == stream_id)).all()
        shapes = conn.execute(select(b).where(b.c.stream_id == stream_id)).all()
        return {
            "sessions": {(r.stream_id,): _figures_tuple(_figures(r._mapping)) for r in sessions},
            "turns": {
                (r.stream_id, r.branch_id, int(r.anchor_seq)): (
                    int(r.ordinal),
                    *_figures_tuple(_figures(r._mapping)),
                    *_figures_tuple(_figures(r._mapping, "cum_")),
                )
                for r in turns
            },
            "branches": {
                (r.stream_id, r.branch_id): (
                    int(r.pinned),
                    None if r.segments is None else _segments_decoder.decode(bytes(r.segments)),
                )
                for r in shapes
            },
        }

    def stream_ids(self, conn: Connection) -> set[str]:
        found: set[str] = set()
        for table in (self.sessions, self.turns, self.branches):
            found.update(conn.execute(select(table.c.stream_id).distinct()).scalars())
        return found

    def scratch(self) -> UsageProjector:
        return UsageProjector(prefix="convstore_scratch")

    def snapshot(self, conn: Connection) -> Rows:
        out: Rows = {"sessions": {}, "turns": {}, "branches": {}}
        for stream_id in sorted(self.stream_ids(conn)):
            for table, rows in self.live_rows(conn, stream_id).items():
                out[table].update(rows)
        return out


def state_rows(stream_id: str, state: UsageState) -> Rows:
    """The rows of the usage tables for one stream in ``state``."""
    turns: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for owner in state.turns:
        for seq, own, total in state.running(owner):
            ordinal = state.ordinals[(owner, seq)]
            turns[(stream_id, owner, seq)] = (ordinal, *_figures_tuple(own), *_figures_tuple(total))
    sessions = {} if state.session is None else {(stream_id,): _figures_tuple(state.session)}
    branches = {(stream_id, b): (shape.pinned, shape.segments) for b, shape in state.shapes.items()}
    return {"sessions": sessions, "turns": turns, "branches": branches}


class _TableOps:
    """The rules' state in the tables, with branch shapes cached for one ``apply``."""

    def __init__(self, projector: UsageProjector, conn: Connection) -> None:
        self.p = projector
        self.conn = conn
        self.shapes: dict[tuple[str, str], tuple[BranchShape, bool]] = {}

    def shape(self, sid: str, bid: str) -> BranchShape:
        cached = self.shapes.get((sid, bid))
        if cached is None:
            found = self.p.read_shape(self.conn, sid, bid)
            cached = (found or BranchShape(), found is not None)
            self.shapes[(sid, bid)] = cached
        return cached[0]

    def has_shape(self, sid: str, bid: str) -> bool:
        self.shape(sid, bid)
        return self.shapes[(sid, bid)][1]

    def save_shape(self, sid: str, bid: str, shape: BranchShape) -> None:
        self.shape(sid, bid)
        b = self.p.branches
        segments = None if shape.segments is None else _encoder.encode(shape.segments)
        if self.shapes[(sid, bid)][1]:
            self.conn.execute(
                update(b)
                .where(b.c.stream_id == sid, b.c.branch_id == bid)
                .values(pinned=shape.pinned, segments=segments)
            )
        else:
            self.conn.execute(
                insert(b).values(
                    stream_id=sid, branch_id=bid, pinned=shape.pinned, segments=segments
                )
            )
        self.shapes[(sid, bid)] = (shape, True)

    def known_branches(self, sid: str) -> set[str]:
        b, t = self.p.branches, self.p.turns
        shaped = self.conn.execute(select(b.c.branch_id).where(b.c.stream_id == sid)).scalars()
        owners = self.conn.execute(
            select(t.c.branch_id).where(t.c.stream_id == sid).distinct()
        ).scalars()
        found = {*shaped, *owners}
        return found | {b for (s, b), (_, saved) in self.shapes.items() if s == sid and saved}

    def drop_above(self, sid: str, owner: str, above: int) -> None:
        self.p._drop.execute(self.conn, {"sid": sid, "bid": owner, "q": above})

    def record(self, sid: str, owner: str | None, seq: int, ordinal: int, tokens: Tokens) -> None:
        new_turn = 0
        if owner is not None:
            new_turn = self._record_turn(sid, owner, seq, ordinal, tokens)
        added = Figures(new_turn, 1, tokens)
        s = self.p.sessions
        row = self.p._session.first(self.conn, {"sid": sid})
        if row is None:
            self.conn.execute(insert(s).values(stream_id=sid, **_values("", added)))
        else:
            total = _figures(_named(s, row)).plus(added)
            self.conn.execute(update(s).where(s.c.stream_id == sid).values(**_values("", total)))

    def _record_turn(self, sid: str, owner: str, seq: int, ordinal: int, tokens: Tokens) -> int:
        t = self.p.turns
        key = {"sid": sid, "bid": owner, "q": seq}
        row = self.p._turn.first(self.conn, key)
        if row is None:
            added = Figures(1, 1, tokens)
            before = self.p.running_at(self.conn, sid, owner, seq - 1)
            self.conn.execute(
                insert(t).values(
                    stream_id=sid,
                    branch_id=owner,
                    anchor_seq=seq,
                    ordinal=ordinal,
                    **_values("", added),
                    **_values("cum_", before.plus(added)),
                )
            )
        else:
            added = Figures(0, 1, tokens)
            mapping = _named(t, row)
            self.conn.execute(
                update(t)
                .where(t.c.stream_id == sid, t.c.branch_id == owner, t.c.anchor_seq == seq)
                .values(
                    **_values("", _figures(mapping).plus(added)),
                    **_values("cum_", _figures(mapping, "cum_").plus(added)),
                )
            )
        # A turn older than the owner's newest (a late recording): later running
        # totals include it too. Usually there is none or one.
        for later in self.p._later.all(self.conn, key):
            self.conn.execute(
                update(t)
                .where(
                    t.c.stream_id == sid,
                    t.c.branch_id == owner,
                    t.c.anchor_seq == later[2],
                )
                .values(**_values("cum_", _figures(_named(t, later), "cum_").plus(added)))
            )
        return added.turns


# The projector has no state of its own: one instance serves every store. (It is not
# registered here: this module is imported while the registry loads entry points.)
USAGE = UsageProjector()

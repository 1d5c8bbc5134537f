"""The usage projection's tables, kept by the append transaction.

The rules are :func:`projections.usage.apply_event`, run here on three tables:

* ``convstore_usage_sessions``: each session's totals (every recording);
* ``convstore_usage_turns``: per owner branch and anchor, the turn's own usage, its
  owner ordinal, and the running totals of that owner up to it;
* ``convstore_usage_branches``: segments and sharing of the branches that have them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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

from eventstore import RecordedEvent, Rows
from eventstore.prepared import Prepared
from eventstore.schema import MYSQL_TABLE_OPTIONS, Blob, Key, StreamId

from .base import BranchRows, TableProjector, branch_owners
from .usage import BranchShape, Figures, Tokens, UsageState, apply_event, fold

_encoder = msgspec.json.Encoder(order="sorted")
_segments_decoder = msgspec.json.Decoder(tuple[tuple[str, int, int], ...])
_details_decoder = msgspec.json.Decoder(dict[str, Any])

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


class UsageProjector(TableProjector):
    """Keeps the usage tables equal to :func:`fold` of the log."""

    name = "usage"
    schema_version = 1

    def __init__(self, *, prefix: str = "convstore") -> None:
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
        self.tables = {"sessions": self.sessions, "turns": t, "branches": b}
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


class _TableOps(BranchRows[BranchShape]):
    """The rules' state in the tables, with branch shapes cached for one ``apply``."""

    def __init__(self, projector: UsageProjector, conn: Connection) -> None:
        super().__init__(conn, projector.read_shape, BranchShape)
        self.p = projector

    shape = BranchRows.branch_row
    has_shape = BranchRows.has_row

    def save_shape(self, sid: str, bid: str, shape: BranchShape) -> None:
        b = self.p.branches
        segments = None if shape.segments is None else _encoder.encode(shape.segments)
        if self.has_row(sid, bid):
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
        self.saved(sid, bid, shape)

    def known_branches(self, sid: str) -> set[str]:
        b, t = self.p.branches, self.p.turns
        shaped = self.conn.execute(select(b.c.branch_id).where(b.c.stream_id == sid)).scalars()
        found = {*shaped, *branch_owners(self.conn, t, sid)}
        return found | {b for (s, b), (_, saved) in self.branch_rows.items() if s == sid and saved}

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

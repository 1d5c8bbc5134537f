"""The history projection's tables, kept by the append transaction.

The same rules as :func:`projections.history.apply`, on three tables:

* ``convstore_items``: every stored item once, under the branch that added it, as a
  pointer into the payload of the event that added it (the item's exact bytes are a
  slice of that payload, so the log holds each item once; a read fetches each payload
  once and slices the items out, :func:`resolve`). An item whose bytes cannot be
  found verbatim in its event's payload (a payload written in another layout) is
  copied instead; ``item`` holds the copy and is NULL otherwise;
* ``convstore_branches``: the tree (parent, fork point, name, creation) and, for a
  branch that needs them, its segments and how far its rows are shared (``pinned``);
* ``convstore_current_branch``: each session's current branch (absent: main).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate, chain, repeat
from operator import itemgetter
from typing import Any

import msgspec
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.sql.elements import BindParameter

from eventstore import (
    MAIN_BRANCH,
    BranchCreated,
    BranchDeleted,
    BranchSwitched,
    ItemPopped,
    ItemsAdded,
    ItemsExpired,
    RecordedEvent,
    Rows,
    SessionCleared,
    decode_item,
    schema,
)
from eventstore.errors import IntegrityError, ProjectionMismatchError
from eventstore.prepared import BulkInsert, Prepared
from eventstore.records import stored_bytes, to_micros
from eventstore.schema import MYSQL_TABLE_OPTIONS, Blob, Key, StreamId

from .history import (
    MAX_ITEMS_PER_EVENT,
    OPEN,
    SEQ_SHIFT,
    BranchInfo,
    HistoryState,
    Segment,
    cleared_segments,
    describe_all,
    expire_segments,
    fold,
    fork_segments,
    item_seq,
    segment_of,
    split_segments,
)

IdOrParam = str | BindParameter[Any]
# Rows of a read that are not items (their seq column; an item's seq is never negative).
MARKER_ROW = -1  # the branch's segments
PAYLOAD_ROW = -2  # an event's payload, which items point into
# Rows of an array read (:meth:`HistoryProjector.array_read`) that are not items.
SPAN_ROW = -2  # the items one event shows: where they lie in its payload, and the payload
COUNT_ROW = -3  # how many items the read shows
# Where the array read's plan is two index ranges and a probe per event. PostgreSQL
# (no statistics yet) joined each event to every item of the branch and filtered
# (143 ms for 1,200 items), MariaDB joined the items to every event of the table in
# a join buffer: both keep the per-item read (EXPLAIN, 1,800 events; docs/design.md).
_ARRAY_DIALECTS = frozenset({"sqlite"})
_first = itemgetter(0)
_second = itemgetter(1)
# The columns an append writes as given (user_turn it computes).
_STORED = (
    "stream_id",
    "branch_id",
    "seq",
    "item_at",
    "item_size",
    "item",
    "kind",
    "tool_name",
)
# The columns a replay writes, user_turn computed in Python (see HistoryProjector.replay):
# those of an item found in its payload (``item`` is NULL), and those of a copy.
_LOCATED = (
    "stream_id",
    "branch_id",
    "seq",
    "item_at",
    "item_size",
    "kind",
    "tool_name",
    "user_turn",
)
_COPIED = ("stream_id", "branch_id", "seq", "item", "kind", "tool_name", "user_turn")
# The shift from an item's seq to its event's version, as an SQL integer literal
# (PostgreSQL has bigint >> integer, not bigint >> bigint).
_SHIFT = literal_column(str(SEQ_SHIFT), Integer)
Limit = int | BindParameter[Any] | None
_segments_codec = msgspec.json.Encoder()
_segments_decoder = msgspec.json.Decoder(tuple[tuple[str, int, int], ...])


def _encode_segments(segments: tuple[Segment, ...] | None) -> bytes | None:
    return None if segments is None else _segments_codec.encode(segments)


def _decode_segments(data: bytes | None) -> tuple[Segment, ...] | None:
    return None if data is None else _segments_decoder.decode(bytes(data))


@dataclass(frozen=True, slots=True)
class ViewRow:
    """One item a branch shows, with what classifies it."""

    seq: int
    item: bytes
    kind: str
    tool_name: str | None
    user_turn: int | None  # the owner's ordinal: see projections/history.py
    owner: str


@dataclass(frozen=True, slots=True)
class Turn:
    """The user message that starts a turn of a branch."""

    number: int
    seq: int
    item: bytes
    recorded_at: int  # microseconds since the epoch


class HistoryProjector:
    """Keeps the history tables equal to :func:`~projections.history.fold` of the log."""

    name = "history"
    # Revision 3: items point into their event's payload instead of holding a copy.
    # Revision 4: no ``position`` column (an item's event is the one at version
    # seq >> SEQ_SHIFT), so applying an append needs no event position: on MariaDB
    # positions are handed out at commit, after the projections are written.
    schema_version = 4
    # apply never reads an event's position or the events table (eventstore/records.py)
    reads_positions = False

    def __init__(self, *, prefix: str = "convstore") -> None:
        self.metadata = m = MetaData()
        self.items = t = Table(
            f"{prefix}_items",
            m,
            Column("stream_id", StreamId, primary_key=True),
            Column("branch_id", Key(255), primary_key=True),
            Column("seq", BigInteger, primary_key=True, autoincrement=False),
            # The item is payload[item_at : item_at + item_size] of the stream's event
            # at version seq >> SEQ_SHIFT; or, if ``item`` is not NULL, ``item`` itself.
            Column("item_at", Integer, nullable=True),
            Column("item_size", Integer, nullable=True),
            Column("item", Blob, nullable=True),
            Column("kind", String(64), nullable=False),
            Column("tool_name", String(255), nullable=True),
            Column("user_turn", BigInteger, nullable=True),
            sqlite_with_rowid=False,  # clustered on the key: a range scan reads in place
            **MYSQL_TABLE_OPTIONS,
        )
        # Only user messages start turns: a partial index (SQLite, PostgreSQL) holds
        # just those rows; MariaDB, which has no partial indexes, indexes every row.
        Index(
            f"{prefix}_items_turns",
            t.c.stream_id,
            t.c.branch_id,
            t.c.user_turn,
            sqlite_where=t.c.user_turn.is_not(None),
            postgresql_where=t.c.user_turn.is_not(None),
        )
        self.branches = b = Table(
            f"{prefix}_branches",
            m,
            Column("stream_id", StreamId, primary_key=True),
            Column("branch_id", Key(255), primary_key=True),
            Column("parent_branch_id", Key(255), nullable=True),
            Column("fork_seq", BigInteger, nullable=True),
            Column("name", String(255), nullable=True),
            Column("created_version", BigInteger, nullable=False),
            Column("created_at", BigInteger, nullable=False),
            Column("deleted", Boolean, nullable=False),
            Column("pinned", BigInteger, nullable=False),
            Column("segments", Blob, nullable=True),
            **MYSQL_TABLE_OPTIONS,
        )
        self.current = c = Table(
            f"{prefix}_current_branch",
            m,
            Column("stream_id", StreamId, primary_key=True),
            Column("branch_id", Key(255), nullable=False),
            **MYSQL_TABLE_OPTIONS,
        )
        sid, bid = bindparam("sid", type_=Key(255)), bindparam("bid", type_=Key(255))
        # A user message's turn number is one more than the branch's last, found by
        # the insert itself (one index probe; executemany sees the rows before it),
        # so an append reads nothing back. MariaDB/MySQL take a subquery on the table
        # being inserted into only as a derived table, hence the extra SELECT.
        earlier = t.alias("earlier")
        last = (
            select(earlier.c.user_turn)
            .where(
                earlier.c.stream_id == bindparam("stream_id"),
                earlier.c.branch_id == bindparam("branch_id"),
                earlier.c.user_turn.is_not(None),
            )
            .order_by(earlier.c.user_turn.desc())
            .limit(1)
            .subquery("last_turn")
        )
        next_turn = func.coalesce(select(last.c.user_turn).scalar_subquery(), 0) + 1
        self._insert = Prepared(
            insert(t).values(
                {
                    **{name: bindparam(name) for name in _STORED},
                    t.c.user_turn: case((bindparam("is_user", type_=Integer) == 1, next_turn)),
                }
            )
        )
        # A replay (catch-up) numbers the turns itself: plain rows, no subquery, and
        # no parameter for the columns that are NULL (each one bound costs).
        self._insert_located = BulkInsert(t, _LOCATED)
        self._insert_copied = BulkInsert(t, _COPIED)
        self._last_turn = Prepared(
            select(t.c.user_turn)
            .where(t.c.stream_id == sid, t.c.branch_id == bid, t.c.user_turn.is_not(None))
            .order_by(t.c.user_turn.desc())
            .limit(1)
        )
        self._delete_above = Prepared(
            delete(t).where(
                t.c.stream_id == sid, t.c.branch_id == bid, t.c.seq > bindparam("above")
            )
        )
        self._delete_one = Prepared(
            delete(t).where(t.c.stream_id == sid, t.c.branch_id == bid, t.c.seq == bindparam("q"))
        )
        # The pop of a branch without a row in the branches table (every plain session):
        # nothing is shared or segmented there, so its own row simply goes.
        self._delete_unshared = Prepared(
            delete(t).where(
                t.c.stream_id == sid,
                t.c.branch_id == bid,
                t.c.seq == bindparam("q"),
                ~exists().where(b.c.stream_id == sid, b.c.branch_id == bid),
            )
        )
        self._info = Prepared(select(b).where(b.c.stream_id == sid, b.c.branch_id == bid))
        self._insert_info = Prepared(insert(b))
        self._update_info = Prepared(
            update(b)
            .where(b.c.stream_id == sid, b.c.branch_id == bid)
            .values(
                parent_branch_id=bindparam("parent"),
                fork_seq=bindparam("fork"),
                name=bindparam("bname"),
                created_version=bindparam("cv"),
                created_at=bindparam("ca"),
                deleted=bindparam("del"),
                pinned=bindparam("pin"),
                segments=bindparam("segs"),
            )
        )
        self._current = Prepared(select(c.c.branch_id).where(c.c.stream_id == sid))
        self._set_current = Prepared(
            update(c).where(c.c.stream_id == sid).values(branch_id=bindparam("cur"))
        )
        self._insert_current = Prepared(insert(c))
        lo: BindParameter[int] = bindparam("lo", type_=BigInteger)
        hi: BindParameter[int] = bindparam("hi", type_=BigInteger)
        n: BindParameter[int] = bindparam("n", type_=BigInteger)
        self._range_desc = Prepared(self.range_read(sid, bid, lo, hi, n))
        self._range_asc = Prepared(self.range_read(sid, bid, lo, hi, None))
        self._prev = Prepared(
            select(t.c.seq)
            .where(t.c.stream_id == sid, t.c.branch_id == bid, t.c.seq > lo, t.c.seq < hi)
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        self._ordinal_at = Prepared(
            select(t.c.user_turn)
            .where(
                t.c.stream_id == sid,
                t.c.branch_id == bid,
                t.c.seq <= hi,
                t.c.user_turn.is_not(None),
            )
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        turns = (
            t.c.stream_id == sid,
            t.c.branch_id == bid,
            t.c.user_turn > lo,
            t.c.user_turn <= hi,
        )
        self._turn_rows = Prepared(
            self.with_payloads(
                self._rows(full=True).where(*turns).order_by(t.c.user_turn),
                sid,
                self._window(turns, key=t.c.user_turn),
            )
        )
        view = (t.c.stream_id == sid, t.c.branch_id == bid, t.c.seq > lo, t.c.seq <= hi)
        self._view_rows = Prepared(
            self.with_payloads(
                self._rows(full=True).where(*view).order_by(t.c.seq), sid, self._window(view)
            )
        )
        self._fast_newest = Prepared(self._fast_query(sid, bid, n))
        self._fast_all = Prepared(self._fast_query(sid, bid, None))
        self._arrays_newest = Prepared(self.array_read(sid, bid, limit=n, marker=True))
        self._arrays_all = Prepared(self.array_read(sid, bid, marker=True))
        self._range_arrays_all = Prepared(self.array_read(sid, bid, lo, hi))

    # -- queries (built once; the query-plan tests compile the same ones) -----------

    def _rows(self, *, full: bool = False) -> Select[Any]:
        """Items as stored: ``seq, item_at, item_size, item`` (and, ``full``, ``kind,
        tool_name, user_turn`` and a NULL where events give ``recorded_at``). The
        event an item points into is the one at version ``seq >> SEQ_SHIFT`` of the
        stream, and every column read costs (a 100,000-item
        read on SQLite spends about 17 ms a column building Python values)."""
        t = self.items
        columns: list[Any] = [t.c.seq, t.c.item_at, t.c.item_size, t.c.item]
        if full:
            columns += [
                t.c.kind,
                t.c.tool_name,
                t.c.user_turn,
                _null(BigInteger).label("recorded_at"),
            ]
        return select(*columns)

    def _window(
        self, where: Sequence[Any], *, key: Any = None, limit: Limit = None
    ) -> tuple[Any, Any]:
        """The first and last ``seq`` of the items ``where`` selects (the newest
        ``limit`` of them): index probes at both ends of the range, not an aggregate
        over it (``key``, an indexed column in ``seq`` order, orders the probes)."""
        t = self.items
        key = t.c.seq if key is None else key
        last = select(t.c.seq).where(*where).order_by(key.desc()).limit(1).scalar_subquery()
        if limit is None:
            first = select(t.c.seq).where(*where).order_by(key).limit(1).scalar_subquery()
        else:
            newest = select(t.c.seq).where(*where).order_by(key.desc()).limit(limit).subquery()
            first = select(func.min(newest.c.seq)).scalar_subquery()
        return first, last

    def with_payloads(
        self,
        rows: Select[Any],
        stream_id: IdOrParam,
        window: tuple[Any, Any],
        *,
        marker: Select[Any] | None = None,
    ) -> Select[Any]:
        """``rows`` (from :meth:`_rows`) and, once each, the payloads they point into:
        one statement, so a payload holding many items is read and sent once, not
        once per item. The payloads are those of the stream's ItemsAdded events from
        the version of the window's first item to that of its last (an item's version
        is its ``seq`` shifted right): a range of the ``(stream_id, version)`` index,
        found with two probes, instead of a second pass over the items. (It may hold
        payloads no row points into: those of items popped, or added to another
        branch, inside the window.) A payload row has seq -2 and the event's
        version; :func:`resolve` slices the items out of it."""
        e = schema.events
        first, last = window
        # A payload row carries its event's version where item rows have item_at.
        columns: list[Any] = [
            literal(PAYLOAD_ROW, BigInteger).label("seq"),
            e.c.version.label("item_at"),
            _null(Integer).label("item_size"),
            e.c.payload.label("item"),
        ]
        if len(rows.selected_columns) > 4:
            columns += [
                _null(String(64)).label("kind"),
                _null(String(255)).label("tool_name"),
                _null(BigInteger).label("user_turn"),
                e.c.recorded_at.label("recorded_at"),
            ]
        # Ordered by version: that makes the (stream_id, version) index the one that
        # answers, with the window as its range, even before the planner has
        # statistics (PostgreSQL otherwise took the (stream_id, event_id) index and
        # read every event of the session).
        payloads = (
            select(*columns)
            .where(*_window_events(e, stream_id, first, last))
            .order_by(e.c.version)
            .subquery("payloads")
        )
        wanted = rows.subquery("wanted")
        parts = [select(*wanted.c), select(*payloads.c)]
        if marker is not None:
            parts.insert(0, marker)
        return select(union_all(*parts).subquery("found"))

    def range_read(
        self, stream_id: IdOrParam, branch_id: IdOrParam, lo: Any, hi: Any, limit: Limit
    ) -> Select[Any]:
        """:meth:`range_query` with the payloads its rows point into."""
        t = self.items
        where = (
            t.c.stream_id == stream_id,
            t.c.branch_id == branch_id,
            t.c.seq > lo,
            t.c.seq <= hi,
        )
        return self.with_payloads(
            self.range_query(stream_id, branch_id, lo, hi, limit),
            stream_id,
            self._window(where, limit=limit),
        )

    def range_query(
        self, stream_id: IdOrParam, branch_id: IdOrParam, lo: Any, hi: Any, limit: Limit
    ) -> Select[Any]:
        """Items of one segment: all oldest first, or (with ``limit``) the newest,
        newest first. Either way one range scan of the primary key, never a sort."""
        t = self.items
        query = self._rows().where(
            t.c.stream_id == stream_id, t.c.branch_id == branch_id, t.c.seq > lo, t.c.seq <= hi
        )
        if limit is None:
            return query.order_by(t.c.seq)
        return query.order_by(t.c.seq.desc()).limit(limit)

    def items_query(self, stream_id: IdOrParam, branch_id: IdOrParam, limit: Limit) -> Select[Any]:
        """A branch's own items (all of what a branch without segments shows)."""
        t = self.items
        query = self._rows().where(t.c.stream_id == stream_id, t.c.branch_id == branch_id)
        if limit is None:
            return query.order_by(t.c.seq)
        return query.order_by(t.c.seq.desc()).limit(limit)

    def top_query(self, stream_id: IdOrParam, branch_id: IdOrParam) -> Select[Any]:
        """The newest own item of a branch. An ordered index scan, not ``max()``:
        PostgreSQL's max() shortcut is lost when the key's collation differs from the
        comparison's, and then max() reads the whole session."""
        return self.items_query(stream_id, branch_id, 1)

    def _fast_query(self, stream_id: IdOrParam, branch_id: IdOrParam, limit: Limit) -> Select[Any]:
        """One statement for the common case: the branch's own items, plus its
        segments if it has any (a row with seq -1), in which case the own items are
        not the answer and the segments are read instead."""
        b = self.branches
        marker = select(
            literal(MARKER_ROW, BigInteger).label("seq"),
            _null(BigInteger).label("item_at"),
            _null(Integer).label("item_size"),
            b.c.segments.label("item"),
        ).where(b.c.stream_id == stream_id, b.c.branch_id == branch_id, b.c.segments.is_not(None))
        t = self.items
        return self.with_payloads(
            self.items_query(stream_id, branch_id, limit),
            stream_id,
            self._window((t.c.stream_id == stream_id, t.c.branch_id == branch_id), limit=limit),
            marker=marker,
        )

    def array_read(
        self,
        stream_id: IdOrParam,
        branch_id: IdOrParam,
        lo: Any = None,
        hi: Any = None,
        *,
        limit: Limit = None,
        marker: bool = False,
    ) -> Select[Any]:
        """The items of ``branch_id`` (those with ``lo < seq <= hi`` if given; with
        ``limit``, the newest ``limit``) as one row per event they come from instead
        of one per item, so a whole-history read builds a few thousand Python values,
        not hundreds of thousands (:func:`item_arrays` reads the rows).

        An event's items lie in its payload as ``[item,item,...]``, one comma apart
        (:func:`locate_items` checked each offset when the rows were written). So the
        items a read shows of one event, when they are consecutive there, are the
        payload from the first one's start to the last one's end, and that is a JSON
        array's content: the row gives the range, and the payload once. They are
        consecutive exactly when the range's length is the sum of their sizes plus
        the commas between them (``whole``); otherwise (an item removed in between,
        items copied into the projection) the event's rows come as well, one per
        item (seq >= 0). A COUNT_ROW gives the number of items, so an item whose
        event is missing from the log is noticed, not left out; ``marker`` adds
        the branch's segments, as in :meth:`_fast_query`.

        Columns: ``seq, version, item_at, item_end, shown, whole, data``. The spans
        are one pass over the window's events, each joined to its items by a range
        of the primary key: no sort; with ``limit``, the newest keys are read once
        (``window_bounds``), so the cost does not grow with the history.
        """
        t, e = self.items, schema.events
        where: list[Any] = [t.c.stream_id == stream_id, t.c.branch_id == branch_id]
        if lo is not None:
            where += [t.c.seq > lo, t.c.seq <= hi]
        if limit is None:
            first, last = self._window(where)
            total: Any = select(func.count()).where(*where).scalar_subquery()
        else:
            # One pass over the newest ``limit`` keys gives the window's ends and how
            # many items it holds (each used up to four times below).
            newest = select(t.c.seq).where(*where).order_by(t.c.seq.desc()).limit(limit)
            window = newest.subquery("newest")
            bounds = select(
                func.min(window.c.seq).label("first"),
                func.max(window.c.seq).label("last"),
                func.count().label("shown"),
            ).cte("window_bounds")
            first = select(bounds.c.first).scalar_subquery()
            last = select(bounds.c.last).scalar_subquery()
            total = select(bounds.c.shown).scalar_subquery()
            where.append(t.c.seq >= first)
        at, end = t.c.item_at, t.c.item_at + t.c.item_size

        def of_event(version: Any) -> list[Any]:
            return [
                *where,
                t.c.seq >= version.op("<<")(_SHIFT),
                t.c.seq < (version + 1).self_group().op("<<")(_SHIFT),
            ]

        ev = e.alias("spanned")
        count = func.count()
        whole = func.max(end) - func.min(at) == func.sum(t.c.item_size) + count - 1
        spans = (
            select(
                ev.c.version.label("version"),
                func.min(ev.c.position).label("position"),  # (one event: all the same)
                func.min(at).label("first_at"),
                func.max(end).label("end_at"),
                count.label("shown"),
                case((whole, 1), else_=0).label("whole"),
            )
            .select_from(ev.join(t, and_(*of_event(ev.c.version))))
            .where(*_window_events(ev, stream_id, first, last))
            .group_by(ev.c.version)
            .cte("spans")
        )
        names = ("seq", "version", "item_at", "item_end", "shown", "whole", "data")

        def row(*columns: Any) -> Select[Any]:
            return select(*(c.label(name) for c, name in zip(columns, names, strict=True)))

        parts: list[Select[Any]] = []
        if marker:
            b = self.branches
            parts.append(
                row(
                    literal(MARKER_ROW, BigInteger),
                    _null(BigInteger),
                    _null(Integer),
                    _null(Integer),
                    _null(BigInteger),
                    _null(Integer),
                    b.c.segments,
                ).where(
                    b.c.stream_id == stream_id,
                    b.c.branch_id == branch_id,
                    b.c.segments.is_not(None),
                )
            )
        parts.append(
            row(
                literal(COUNT_ROW, BigInteger),
                _null(BigInteger),
                _null(Integer),
                _null(Integer),
                total,
                _null(Integer),
                _null(Blob),
            )
        )
        # The payload, unless every item of the event is a copy: by the event's
        # primary key, which every planner takes (by (stream_id, version), PostgreSQL
        # without statistics took the (stream_id, event_id) index and a filter).
        payload = (
            select(e.c.payload)
            .where(e.c.position == spans.c.position, spans.c.first_at.is_not(None))
            .scalar_subquery()
        )
        parts.append(
            row(
                literal(SPAN_ROW, BigInteger),
                spans.c.version,
                spans.c.first_at,
                spans.c.end_at,
                spans.c.shown,
                spans.c.whole,
                payload,
            )
        )
        parts.append(
            row(
                t.c.seq,
                _null(BigInteger),
                at,
                end,
                _null(BigInteger),
                _null(Integer),
                t.c.item,
            )
            .select_from(spans.join(t, and_(*of_event(spans.c.version))))
            .where(spans.c.whole == 0)
        )
        return select(union_all(*parts).subquery("found"))

    # -- the append transaction ----------------------------------------------------

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        self._apply(_Batch(self, conn), events)

    def replay(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        """:meth:`apply` for a catch-up (``rebuild``), which feeds the log in batches
        of a thousand events to tables that hold exactly the log before them and that
        no append writes meanwhile (eventstore/registry.py). The same rows, written in
        bulk: the turn numbers are counted in Python (one look-up of the last one per
        branch and batch, again after a removal) instead of by a subquery per row, and
        the rows go a hundred to a statement (:class:`~eventstore.prepared.BulkInsert`).
        tests/projections/test_history.py compares a rebuild with the live tables
        column for column."""
        self._apply(_Replay(self, conn), events)

    def _apply(self, work: _Batch, events: Sequence[RecordedEvent]) -> None:
        conn = work.conn
        for recorded in events:
            event = recorded.event
            sid, version = recorded.stream_id, recorded.version
            match event:
                case ItemsAdded(items=items, branch_id=b):
                    work.add(sid, b, version, items, recorded.payload)
                    continue
                case _:
                    pass
            work.flush()  # a removal must see the rows added before it in this batch
            work.forget_turns(sid)  # ... and may remove the last user message of a branch
            match event:
                case ItemPopped(seq=seq, branch_id=b):
                    work.pop(sid, b, seq)
                case SessionCleared(branch_id=None):
                    for b in work.branch_ids(sid):
                        work.clear(sid, b, version)
                case SessionCleared(branch_id=str(b)):
                    work.clear(sid, b, version)
                case ItemsExpired(upto_seq=upto, branch_id=b):
                    info = work.info(sid, b)
                    work.save(
                        sid, b, replace(info, segments=expire_segments(work.segments(sid, b), upto))
                    )
                case BranchCreated(branch_id=c, parent_branch_id=p, fork_seq=fork, name=name):
                    segments = fork_segments(work.segments(sid, p), fork, c, version)
                    for src, _lo, hi in segments[:-1]:
                        held = work.info(sid, src)
                        if hi > held.pinned:
                            work.save(sid, src, replace(held, pinned=hi))
                    created = BranchInfo(
                        parent=p,
                        fork_seq=fork,
                        name=name,
                        created_version=version,
                        created_at=to_micros(recorded.recorded_at),
                        pinned=work.info(sid, c).pinned,
                        segments=segments,
                    )
                    work.save(sid, c, created)
                case BranchSwitched(branch_id=b):
                    work.set_current(sid, b)
                case BranchDeleted(branch_id=b):
                    info = work.info(sid, b)
                    self._delete_above.execute(conn, {"sid": sid, "bid": b, "above": info.pinned})
                    work.save(sid, b, replace(info, deleted=True, segments=()))
                    if self.read_current(conn, sid) == b:
                        work.set_current(sid, MAIN_BRANCH)
                case _:
                    pass
        work.flush()

    def reset(self, conn: Connection) -> None:
        for table in (self.items, self.branches, self.current):
            conn.execute(delete(table))

    # -- reads ---------------------------------------------------------------------

    def read_info(self, conn: Connection, stream_id: str, branch_id: str) -> BranchInfo | None:
        row = self._info.first(conn, {"sid": stream_id, "bid": branch_id})
        if row is None:
            return None
        return _info_of(dict(zip(self.branches.c.keys(), row, strict=True)))

    def segments(self, conn: Connection, stream_id: str, branch_id: str) -> tuple[Segment, ...]:
        info = self.read_info(conn, stream_id, branch_id)
        if info is None or info.segments is None:
            return ((branch_id, 0, OPEN),)
        return info.segments

    def read_entries(
        self, conn: Connection, stream_id: str, branch_id: str, limit: int | None
    ) -> list[tuple[int, bytes]]:
        """``(seq, item)`` of the newest ``limit`` items a branch shows (all if None),
        oldest first. One statement when the branch has no segments."""
        marker, found = resolve(self._fast_rows(conn, stream_id, branch_id, limit))
        if marker is None:
            return [(seq, item) for seq, item, *_ in found]
        segments = _decode_segments(marker) or ()
        return self._read_segments(conn, stream_id, segments, limit)

    def _fast_rows(
        self, conn: Connection, stream_id: str, branch_id: str, limit: int | None
    ) -> list[Any]:
        """The rows of :meth:`_fast_query` for the newest ``limit`` items (all if None)."""
        key = {"sid": stream_id, "bid": branch_id}
        if limit is None:
            return self._fast_all.all(conn, key)
        return self._fast_newest.all(conn, {**key, "n": limit})

    def _read_segments(
        self, conn: Connection, stream_id: str, segments: Sequence[Segment], limit: int | None
    ) -> list[tuple[int, bytes]]:
        if limit is None:
            out: list[tuple[int, bytes]] = []
            for src, lo, hi in segments:
                key = {"sid": stream_id, "bid": src, "lo": lo, "hi": hi}
                found = resolve(self._range_asc.all(conn, key))[1]
                out.extend((seq, item) for seq, item, *_ in found)
            return out
        newest: list[tuple[int, bytes]] = []
        for src, lo, hi in reversed(segments):
            if len(newest) >= limit:
                break
            key = {"sid": stream_id, "bid": src, "lo": lo, "hi": hi, "n": limit - len(newest)}
            found = resolve(self._range_desc.all(conn, key))[1]
            newest.extend((seq, item) for seq, item, *_ in reversed(found))
        newest.reverse()
        return newest

    def read_items(
        self, conn: Connection, stream_id: str, branch_id: str, limit: int | None
    ) -> list[bytes]:
        """The newest ``limit`` items a branch shows (all if None), oldest first.
        (:meth:`read_entries` without the ``seq`` of each item.)"""
        marker, items = resolve_items(self._fast_rows(conn, stream_id, branch_id, limit))
        if marker is None:
            return items
        segments = _decode_segments(marker) or ()
        return [item for _, item in self._read_segments(conn, stream_id, segments, limit)]

    def read_arrays(
        self, conn: Connection, stream_id: str, branch_id: str, limit: int | None
    ) -> list[tuple[Any, int]]:
        """What :meth:`read_items` reads, as JSON arrays of consecutive items:
        ``(array, count)`` pairs, oldest first, whose elements are exactly the stored
        bytes of the items (:func:`eventstore.decode_arrays` decodes them). One
        statement when the branch has no segments; one row per event, not per item
        (:meth:`array_read`) on SQLite; elsewhere the per-item read, joined."""
        if conn.dialect.name not in _ARRAY_DIALECTS:
            items = self.read_items(conn, stream_id, branch_id, limit)
            return _one_array(items)
        key: dict[str, Any] = {"sid": stream_id, "bid": branch_id}
        rows = (
            self._arrays_all.all(conn, key)
            if limit is None
            else self._arrays_newest.all(conn, {**key, "n": limit})
        )
        marker, arrays = item_arrays(rows)
        if marker is None:
            return arrays
        segments = _decode_segments(marker) or ()  # the own items are not the answer
        if limit is None:
            arrays = []
            for src, lo, hi in segments:
                key = {"sid": stream_id, "bid": src, "lo": lo, "hi": hi}
                arrays += item_arrays(self._range_arrays_all.all(conn, key))[1]
            return arrays
        # The newest items of a branch's segments, per item: the array read of a
        # segment's newest ``limit`` took 19 ms on a 100,000-item segment (SQLite
        # scanned the segment's keys), the per-item read 0.1 ms.
        items = [item for _, item in self._read_segments(conn, stream_id, segments, limit)]
        return _one_array(items)

    def read_top(
        self, conn: Connection, stream_id: str, branch_id: str
    ) -> tuple[int, bytes] | None:
        """``(seq, item)`` of the newest item a branch shows, or None if it has none.

        Under the stream's lock (``EventStore.append_decided``) the answer cannot change
        before the caller's events are written.
        """
        found = self.read_entries(conn, stream_id, branch_id, 1)
        return found[0] if found else None

    def find_mismatch(
        self, conn: Connection, stream_id: str, branch_id: str
    ) -> ProjectionMismatchError:
        """After a read of a branch failed to decode: the error naming the first of its
        rows that does not hold an item as its event stored it (read one by one)."""
        for seq, item in self.read_entries(conn, stream_id, branch_id, None):
            try:
                decode_item(item)
            except msgspec.DecodeError as error:
                return mismatch(stream_id, branch_id, seq, str(error))
        return mismatch(stream_id, branch_id, None, "its items did not decode as read")

    def read_current(self, conn: Connection, stream_id: str) -> str:
        """The session's current branch (main unless a BranchSwitched says otherwise)."""
        row = self._current.first(conn, {"sid": stream_id})
        return MAIN_BRANCH if row is None else str(row[0])

    def read_branches(self, conn: Connection, stream_id: str) -> dict[str, BranchInfo]:
        """Every branch with a row (created branches, and any branch that shares)."""
        b = self.branches
        rows = conn.execute(select(b).where(b.c.stream_id == stream_id)).all()
        return {row.branch_id: _info_of(row._mapping) for row in rows}

    def read_view(self, conn: Connection, stream_id: str, branch_id: str) -> list[ViewRow]:
        """Every item a branch shows, with its kind, tool name and owner ordinal."""
        out: list[ViewRow] = []
        for src, lo, hi in self.segments(conn, stream_id, branch_id):
            rows = self._view_rows.all(conn, {"sid": stream_id, "bid": src, "lo": lo, "hi": hi})
            out.extend(ViewRow(r[0], r[1], r[2], r[3], r[4], src) for r in resolve(rows)[1])
        return out

    def _ordinal(self, conn: Connection, stream_id: str, src: str, upto: int) -> int:
        row = self._ordinal_at.first(conn, {"sid": stream_id, "bid": src, "hi": upto})
        return 0 if row is None else int(row[0])

    def turn_ranges(
        self, conn: Connection, stream_id: str, branch_id: str
    ) -> list[tuple[str, int, int]]:
        """Per segment: ``(source, first ordinal exclusive, last ordinal inclusive)`` of
        the user turns it shows (two index look-ups a segment, whatever the length)."""
        ranges = []
        for src, lo, hi in self.segments(conn, stream_id, branch_id):
            first = self._ordinal(conn, stream_id, src, lo) if lo > 0 else 0
            last = self._ordinal(conn, stream_id, src, hi)
            ranges.append((src, first, last))
        return ranges

    def turn_count(self, conn: Connection, stream_id: str, branch_id: str) -> int:
        return sum(last - first for _, first, last in self.turn_ranges(conn, stream_id, branch_id))

    def find_turn(self, conn: Connection, stream_id: str, branch_id: str, turn: int) -> Turn | None:
        """The user message that starts turn ``turn`` (1-based) of a branch."""
        if turn < 1:
            return None
        before = 0
        for src, first, last in self.turn_ranges(conn, stream_id, branch_id):
            if turn <= before + (last - first):
                ordinal = first + (turn - before)
                key = {"sid": stream_id, "bid": src, "lo": ordinal - 1, "hi": ordinal}
                rows = resolve(self._turn_rows.all(conn, key))[1]
                if not rows:
                    return None
                return Turn(turn, rows[0][0], rows[0][1], int(rows[0][5]))
            before += last - first
        return None

    def read_turns(self, conn: Connection, stream_id: str, branch_id: str) -> list[Turn]:
        """Every user message a branch shows, numbered as the branch's turns."""
        out: list[Turn] = []
        for src, first, last in self.turn_ranges(conn, stream_id, branch_id):
            if last <= first:
                continue
            key = {"sid": stream_id, "bid": src, "lo": first, "hi": last}
            for r in resolve(self._turn_rows.all(conn, key))[1]:
                out.append(Turn(len(out) + 1, r[0], r[1], int(r[5])))
        return out

    def read_last_turns(
        self, conn: Connection, stream_id: str, branch_id: str, turns: int, limit: int | None
    ) -> list[bytes]:
        """The items of the last ``turns`` whole turns of a branch (a turn starts at a
        user message; with at least as many turns asked as there are, everything),
        then at most the newest ``limit`` of them. Reads only those turns."""
        count = self.turn_count(conn, stream_id, branch_id)
        start = self.find_turn(conn, stream_id, branch_id, count - turns + 1)
        if turns >= count or start is None:
            return self.read_items(conn, stream_id, branch_id, limit)
        found = self.read_from(conn, stream_id, branch_id, start.seq)
        if limit is not None:
            found = found[len(found) - limit :] if limit else []
        return [item for _, item in found]

    def read_from(
        self, conn: Connection, stream_id: str, branch_id: str, from_seq: int
    ) -> list[tuple[int, bytes]]:
        """``(seq, item)`` of the items a branch shows from key ``from_seq`` on."""
        segments = [
            (src, max(lo, from_seq - 1), hi)
            for src, lo, hi in self.segments(conn, stream_id, branch_id)
            if hi >= from_seq
        ]
        return self._read_segments(conn, stream_id, segments, None)

    def read_before(
        self, conn: Connection, stream_id: str, branch_id: str, before_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """``(seq, item)`` of the newest ``limit`` items a branch shows before key
        ``before_seq``, oldest first (a page further back than :meth:`read_entries`;
        reads only that page, whatever the branch's length)."""
        segments = [
            (src, lo, min(hi, before_seq - 1))
            for src, lo, hi in self.segments(conn, stream_id, branch_id)
            if lo < before_seq - 1
        ]
        return self._read_segments(conn, stream_id, segments, limit)

    def count_items(self, conn: Connection, stream_id: str, branch_id: str) -> int:
        t = self.items
        total = 0
        for src, lo, hi in self.segments(conn, stream_id, branch_id):
            total += int(
                conn.execute(
                    select(func.count())
                    .select_from(t)
                    .where(t.c.stream_id == stream_id, t.c.branch_id == src)
                    .where(t.c.seq > lo, t.c.seq <= hi)
                ).scalar_one()
            )
        return total

    # -- checking, one stream at a time ---------------------------------------------

    def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
        """The rows the tables should hold for one stream, folded from its log."""
        return state_rows(stream_id, fold(events))

    def live_rows(self, conn: Connection, stream_id: str) -> Rows:
        """The rows the tables hold for one stream."""
        t, b, c = self.items, self.branches, self.current
        e = schema.events
        items = conn.execute(select(t).where(t.c.stream_id == stream_id)).all()
        payloads = {
            int(version): stored_bytes(payload)
            for version, payload in conn.execute(
                select(e.c.version, e.c.payload).where(e.c.stream_id == stream_id)
            )
        }
        infos = conn.execute(select(b).where(b.c.stream_id == stream_id)).all()
        current = conn.execute(select(c).where(c.c.stream_id == stream_id)).all()
        return {
            "items": {
                (r.stream_id, r.branch_id, r.seq): (
                    _stored_item(r.item, payloads.get(r.seq >> SEQ_SHIFT), r.item_at, r.item_size),
                    r.kind,
                    r.tool_name,
                    r.user_turn,
                )
                for r in items
            },
            "branches": {
                (r.stream_id, r.branch_id): _info_tuple(_info_of(r._mapping)) for r in infos
            },
            "current_branch": {(r.stream_id,): (r.branch_id,) for r in current},
        }

    def stream_ids(self, conn: Connection) -> set[str]:
        """Every stream that has rows in the history tables."""
        found: set[str] = set()
        for table in (self.items, self.branches, self.current):
            found.update(conn.execute(select(table.c.stream_id).distinct()).scalars())
        return found

    def scratch(self) -> HistoryProjector:
        """The same projection into scratch tables (for verify)."""
        return HistoryProjector(prefix="convstore_scratch")

    def snapshot(self, conn: Connection) -> Rows:
        """Every row of every table, as ``{table: {primary key: other columns}}``."""
        out: Rows = {"items": {}, "branches": {}, "current_branch": {}}
        for stream_id in sorted(self.stream_ids(conn)):
            for table, rows in self.live_rows(conn, stream_id).items():
                out[table].update(rows)
        return out


def _null(type_: Any) -> Any:
    return cast(null(), type_)


def _stored_item(
    copy: bytes | None, payload: bytes | None, at: int | None, size: int | None
) -> bytes | None:
    """An item's bytes: its copy, or its slice of the payload (None if that is gone)."""
    if copy is not None:
        return bytes(copy)
    if payload is None or at is None or size is None:
        return None
    return payload[at : at + size]


def _sliced(
    copy: bytes | None, payload: bytes | None, at: int | None, end: int | None
) -> bytes | None:
    """An item's bytes: its copy, or ``payload[at:end]`` (None if that is gone)."""
    if copy is not None:
        return bytes(copy)
    if payload is None or at is None or end is None:
        return None
    return payload[at:end]


def mismatch(
    stream_id: str, branch_id: str, seq: int | None, detail: str
) -> ProjectionMismatchError:
    """The error for a history row (of item ``seq``, if known) that does not hold an
    item as its event stored it."""
    version = None if seq is None else seq >> SEQ_SHIFT
    row = "a row" if version is None else f"the row of an item of version {version}"
    return ProjectionMismatchError(
        f"session {stream_id!r}, branch {branch_id!r}: {row} of the history projection "
        f"does not match its event in the log ({detail}); the projection was changed "
        "outside convstore or is damaged: run 'convstore DB replay' to rebuild it from "
        "the log ('convstore DB audit' lists every difference)",
        stream_id=stream_id,
        version=version,
    )


def decode_entry(stream_id: str, branch_id: str, seq: int, item: bytes) -> Any:
    """The item of a history row ``(seq, item)``; ProjectionMismatchError if the row
    does not hold one."""
    try:
        return decode_item(item)
    except msgspec.DecodeError as error:
        raise mismatch(stream_id, branch_id, seq, str(error)) from None


def _window_events(e: Any, stream_id: IdOrParam, first: Any, last: Any) -> list[Any]:
    """The ItemsAdded events of ``e`` (the events table or an alias of it) that the
    items from seq ``first`` to ``last`` of a stream point into: a range of its
    ``(stream_id, version)`` index (an item's version is its seq shifted right)."""
    return [
        e.c.stream_id == stream_id,
        e.c.version >= first.op(">>")(_SHIFT),
        e.c.version <= last.op(">>")(_SHIFT),
        e.c.event_type == "ItemsAdded",
    ]


def _one_array(items: list[bytes]) -> list[tuple[Any, int]]:
    """Items read one by one as :meth:`HistoryProjector.read_arrays` returns them: one
    JSON array of all of them (none if there are none)."""
    return [(b"[" + b",".join(items) + b"]", len(items))] if items else []


def _sorted_rows(
    rows: Sequence[Any],
) -> tuple[bytes | None, list[Any], dict[int, tuple[bytes, Any]], bool]:
    """The parts of a read built by :meth:`HistoryProjector.with_payloads`: the
    marker's segments (or None), the item rows in ``seq`` order, the payloads by
    version (with ``recorded_at`` in a ``full`` read), and whether it is ``full``."""
    found = [row for row in rows if row[0] >= 0]
    found.sort(key=_first)
    full = bool(found) and len(found[0]) > 4
    events = {
        row[1]: (stored_bytes(row[3]), row[7] if full else None)
        for row in rows
        if row[0] == PAYLOAD_ROW
    }
    marker = next((row[3] for row in rows if row[0] == MARKER_ROW), None)
    return marker, found, events, full


def _missing_event(version: KeyError) -> IntegrityError:
    return IntegrityError(
        f"the event at version {version} that an item of the history points into "
        "is gone from the log (convstore DB audit tells more)"
    )


def resolve(rows: Sequence[Any]) -> tuple[bytes | None, list[tuple[Any, ...]]]:
    """The rows of a read built by :meth:`HistoryProjector.with_payloads`: the marker's
    segments (or None), and ``(seq, item)`` per item in ``seq`` order, each item
    sliced out of the payload of the event at version ``seq >> SEQ_SHIFT``; a
    ``full`` read adds ``kind, tool_name, user_turn, recorded_at``. (Comprehensions,
    not one loop: this runs per item of a whole-history read.)"""
    marker, found, events, full = _sorted_rows(rows)
    try:
        if full:
            return marker, [
                (
                    row[0],
                    _stored_item(row[3], (event := events[row[0] >> SEQ_SHIFT])[0], row[1], row[2]),
                    row[4],
                    row[5],
                    row[6],
                    event[1],
                )
                for row in found
            ]
        return marker, [
            (
                seq,
                bytes(copy) if copy is not None else events[seq >> SEQ_SHIFT][0][at : at + size],
            )
            for seq, at, size, copy in found
        ]
    except KeyError as missing:
        raise _missing_event(missing) from None


def resolve_items(rows: Sequence[Any]) -> tuple[bytes | None, list[bytes]]:
    """:func:`resolve` of a read that is not ``full``, without the ``seq`` of each
    item: the marker's segments (or None) and the items in ``seq`` order (a
    100,000-item read builds no pair per item)."""
    marker, found, events, _ = _sorted_rows(rows)
    try:
        return marker, [
            bytes(copy) if copy is not None else events[seq >> SEQ_SHIFT][0][at : at + size]
            for seq, at, size, copy in found
        ]
    except KeyError as missing:
        raise _missing_event(missing) from None


def item_arrays(rows: Sequence[Any]) -> tuple[bytes | None, list[tuple[Any, int]]]:
    """The rows of :meth:`HistoryProjector.array_read`: the marker's segments (or
    None), and per event, oldest first, ``(array, count)``: a JSON array whose
    elements are the stored bytes of ``count`` items, in ``seq`` order. The array is
    the payload itself when the items are its whole list (a view, nothing copied),
    its range in brackets when they are consecutive, else the items joined."""
    marker: bytes | None = None
    total = 0
    spans: list[Any] = []
    loose: dict[int, list[Any]] = {}
    for row in rows:
        kind = row[0]
        if kind == SPAN_ROW:
            spans.append(row)
        elif kind >= 0:
            loose.setdefault(kind >> SEQ_SHIFT, []).append(row)
        elif kind == MARKER_ROW:
            marker = row[6]
        else:
            total = int(row[4])
    spans.sort(key=_second)
    arrays: list[tuple[Any, int]] = []
    shown = 0
    for _, version, at, end, items, whole, payload in spans:
        count = int(items)
        shown += count
        data = None if payload is None else stored_bytes(payload)
        if whole and data is not None:
            at, end = int(at), int(end)
            view = memoryview(data)
            if data[at - 1 : at] == b"[" and data[end : end + 1] == b"]":
                arrays.append((view[at - 1 : end + 1], count))  # the event's whole list
            else:
                arrays.append((b"".join((b"[", view[at:end], b"]")), count))
            continue
        found = sorted(loose.get(version, ()), key=_first)
        datas = [
            item
            for _, _, at, end, _, _, copy in found
            if (item := _sliced(copy, data, at, end)) is not None
        ]
        if len(datas) != count:
            raise IntegrityError(
                f"the event at version {version} that items of the history point into "
                "is gone from the log (convstore DB audit tells more)"
            )
        arrays.append((b"".join((b"[", b",".join(datas), b"]")), count))
    if shown != total:
        raise IntegrityError(
            f"the history shows {total} items here but the log holds the events of only "
            f"{shown} of them (convstore DB audit tells more)"
        )
    return marker, arrays


def _info_of(row: Mapping[Any, Any]) -> BranchInfo:
    return BranchInfo(
        parent=row["parent_branch_id"],
        fork_seq=row["fork_seq"],
        name=row["name"],
        created_version=int(row["created_version"]),
        created_at=int(row["created_at"]),
        deleted=bool(row["deleted"]),
        pinned=int(row["pinned"]),
        segments=_decode_segments(row["segments"]),
    )


def _info_tuple(info: BranchInfo) -> tuple[Any, ...]:
    return (
        info.parent,
        info.fork_seq,
        info.name,
        info.created_version,
        info.created_at,
        info.deleted,
        info.pinned,
        info.segments,
    )


def state_rows(stream_id: str, state: HistoryState) -> Rows:
    """The rows of the history tables for one stream in ``state``."""
    items: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for owner, top in state.rows.items():
        row = top
        while row is not None:
            items[(stream_id, owner, row.seq)] = (
                row.item,
                row.kind.kind,
                row.kind.tool_name,
                row.user_turn,
            )
            row = row.prev
    branches = {(stream_id, b): _info_tuple(info) for b, info in state.branches.items()}
    current = {} if state.switched_to is None else {(stream_id,): (state.switched_to,)}
    return {"items": items, "branches": branches, "current_branch": current}


_ITEM_LISTS = (b'"items":[', b'"messages":[')


def locate_items(payload: bytes, items: Sequence[bytes | msgspec.Raw]) -> list[int] | None:
    """Where each item's exact bytes start in ``payload``, or None if they cannot all
    be found there (then the projection keeps copies).

    The encoder writes an ItemsAdded payload as ``{..."items":[item,item,...]...}``
    with every item verbatim (:class:`msgspec.Raw`), so the items follow each other
    one separator apart. Each offset is checked byte for byte, so a pointer is
    correct whatever layout the payload has: a read slices exactly the item's bytes.
    """
    found = _locate(payload, items)
    return None if found is None else found[0]


def _locate(
    payload: bytes, items: Sequence[bytes | msgspec.Raw]
) -> tuple[list[int], list[int]] | None:
    """:func:`locate_items`, with each item's size: the items joined by commas must be
    the bytes after the list's opening bracket (one comparison, not one per item)."""
    for key in _ITEM_LISTS:
        start = payload.find(key)
        if start >= 0:
            break
    else:
        return None
    if not items:
        return [], []
    at = start + len(key)
    if not payload.startswith(b",".join(items), at):
        return None
    sizes = list(map(len, items))
    offsets = list(accumulate([size + 1 for size in sizes[:-1]], initial=at))
    return offsets, sizes


class _Batch:
    """The work of one ``apply`` call: buffered inserts and cached branch rows."""

    def __init__(self, projector: HistoryProjector, conn: Connection) -> None:
        self.p = projector
        self.conn = conn
        self.rows: list[dict[str, Any]] = []
        self.infos: dict[tuple[str, str], tuple[BranchInfo, bool]] = {}

    def add(
        self, sid: str, bid: str, version: int, items: Sequence[msgspec.Raw], payload: bytes
    ) -> None:
        kinds, tools = describe_all(items)
        found = _locate(payload, items)
        for index, raw in enumerate(items):
            kind = kinds[index]
            self.rows.append(
                {
                    "stream_id": sid,
                    "branch_id": bid,
                    "seq": item_seq(version, index),
                    "item_at": None if found is None else found[0][index],
                    "item_size": None if found is None else found[1][index],
                    "item": bytes(raw) if found is None else None,
                    "kind": kind,
                    "tool_name": tools[index],
                    "is_user": 1 if kind == "user" else 0,
                }
            )

    def flush(self) -> None:
        if self.rows:
            self.p._insert.execute_many(self.conn, self.rows)
            self.rows = []

    def forget_turns(self, sid: str) -> None:
        """Rows of ``sid`` may be removed next (the insert numbers turns itself)."""

    def info(self, sid: str, bid: str) -> BranchInfo:
        cached = self.infos.get((sid, bid))
        if cached is None:
            found = self.p.read_info(self.conn, sid, bid)
            cached = (found or BranchInfo(), found is not None)
            self.infos[(sid, bid)] = cached
        return cached[0]

    def segments(self, sid: str, bid: str) -> tuple[Segment, ...]:
        info = self.info(sid, bid)
        return ((bid, 0, OPEN),) if info.segments is None else info.segments

    def save(self, sid: str, bid: str, info: BranchInfo) -> None:
        self.info(sid, bid)
        exists = self.infos[(sid, bid)][1]
        values = {
            "sid": sid,
            "bid": bid,
            "parent": info.parent,
            "fork": info.fork_seq,
            "bname": info.name,
            "cv": info.created_version,
            "ca": info.created_at,
            "del": info.deleted,
            "pin": info.pinned,
            "segs": _encode_segments(info.segments),
        }
        if exists:
            self.p._update_info.execute(self.conn, values)
        else:
            self.p._insert_info.execute(
                self.conn,
                {
                    "stream_id": sid,
                    "branch_id": bid,
                    "parent_branch_id": info.parent,
                    "fork_seq": info.fork_seq,
                    "name": info.name,
                    "created_version": info.created_version,
                    "created_at": info.created_at,
                    "deleted": info.deleted,
                    "pinned": info.pinned,
                    "segments": _encode_segments(info.segments),
                },
            )
        self.infos[(sid, bid)] = (info, True)

    def pop(self, sid: str, bid: str, seq: int) -> None:
        key = {"sid": sid, "bid": bid, "q": seq}
        if (sid, bid) not in self.infos and self.p._delete_unshared.rowcount(self.conn, key):
            return  # a branch with no row of its own shares nothing: one statement
        info = self.info(sid, bid)
        segments = self.segments(sid, bid)
        segment = segment_of(segments, seq)
        if segment is None:
            return
        src, lo, _hi = segment
        if src == bid and seq > info.pinned:
            self.p._delete_one.execute(self.conn, {"sid": sid, "bid": bid, "q": seq})
            return
        row = self.p._prev.first(self.conn, {"sid": sid, "bid": src, "lo": lo, "hi": seq})
        split = split_segments(segments, seq, None if row is None else int(row[0]))
        self.save(sid, bid, replace(info, segments=split))

    def clear(self, sid: str, bid: str, version: int) -> None:
        info = self.info(sid, bid)
        self.p._delete_above.execute(self.conn, {"sid": sid, "bid": bid, "above": info.pinned})
        if not self.infos[(sid, bid)][1]:
            return  # nothing shared, no segments: the branch is simply empty again
        self.save(sid, bid, replace(info, segments=cleared_segments(bid, version)))

    def branch_ids(self, sid: str) -> set[str]:
        t, b = self.p.items, self.p.branches
        owners = self.conn.execute(select(t.c.branch_id).where(t.c.stream_id == sid).distinct())
        infos = self.conn.execute(select(b.c.branch_id).where(b.c.stream_id == sid))
        return {MAIN_BRANCH, *owners.scalars(), *infos.scalars()}

    def set_current(self, sid: str, bid: str) -> None:
        if self.p._current.first(self.conn, {"sid": sid}) is None:
            self.p._insert_current.execute(self.conn, {"stream_id": sid, "branch_id": bid})
        else:
            self.p._set_current.execute(self.conn, {"sid": sid, "cur": bid})


class _Replay(_Batch):
    """The work of one ``replay`` call: rows inserted in bulk, turns numbered here."""

    def __init__(self, projector: HistoryProjector, conn: Connection) -> None:
        super().__init__(projector, conn)
        # The values of the rows to insert, row after row, in _LOCATED's (or _COPIED's) order.
        self.located: list[Any] = []
        self.copied: list[Any] = []
        self.turns: dict[tuple[str, str], int] = {}  # the last user turn of a branch

    def add(
        self, sid: str, bid: str, version: int, items: Sequence[msgspec.Raw], payload: bytes
    ) -> None:
        kinds, tools = describe_all(items)
        first = item_seq(version, 0)
        seqs: Iterable[int] = (
            range(first, first + len(items))
            if len(items) <= MAX_ITEMS_PER_EVENT
            else [item_seq(version, index) for index in range(len(items))]
        )
        turns: Iterable[int | None] = repeat(None)
        if "user" in kinds:
            turn = self.last_turn(sid, bid)
            numbered: list[int | None] = []
            for kind in kinds:
                if kind == "user":
                    turn += 1
                    numbered.append(turn)
                else:
                    numbered.append(None)
            self.turns[(sid, bid)] = turn
            turns = numbered
        found = _locate(payload, items)
        if found is None:  # copies, as apply keeps them
            rows = zip(repeat(sid), repeat(bid), seqs, map(bytes, items), kinds, tools, turns)
            self.copied.extend(chain.from_iterable(rows))
        else:
            rows = zip(repeat(sid), repeat(bid), seqs, found[0], found[1], kinds, tools, turns)
            self.located.extend(chain.from_iterable(rows))

    def last_turn(self, sid: str, bid: str) -> int:
        turn = self.turns.get((sid, bid))
        if turn is None:
            row = self.p._last_turn.first(self.conn, {"sid": sid, "bid": bid})
            turn = self.turns[(sid, bid)] = 0 if row is None else int(row[0])
        return turn

    def flush(self) -> None:
        if self.located:
            self.p._insert_located.insert(self.conn, self.located)
            self.located = []
        if self.copied:
            self.p._insert_copied.insert(self.conn, self.copied)
            self.copied = []

    def forget_turns(self, sid: str) -> None:
        for key in [key for key in self.turns if key[0] == sid]:
            del self.turns[key]

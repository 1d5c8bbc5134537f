"""The history's read statements, built with SQLAlchemy Core (the query-plan tests
compile the same ones: tests/projections/test_read_cost.py).

Every read is an index range: a branch's own items are one range of the primary key
``(stream_id, branch_id, seq)``, read newest first for a ``LIMIT`` so that the cost
does not grow with the history. An item points into the payload of the event that
added it, the stream's event at version ``seq >> SEQ_SHIFT``; a read returns, in the
same statement (``UNION ALL``), the payloads its rows point into, once each: a range
of the events' ``(stream_id, version)`` index from the window's first item to its
last, found with two index probes (not an aggregate over the items). Rows that are
not items carry a :class:`~projections.history_rows.RowKind` in their ``seq`` column.

Why these shapes: PostgreSQL's ``max()`` shortcut is lost when the key's collation
differs from the comparison's, so "newest" is an ordered index scan with ``LIMIT 1``;
ordering the payloads by version makes the ``(stream_id, version)`` index answer even
before the planner has statistics (PostgreSQL otherwise took the ``(stream_id,
event_id)`` index and read every event of the session); every column read costs
Python work per row, so a read selects only what its caller uses. The measurements
are in docs/design.md ("History projection").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Select,
    String,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql.elements import BindParameter

from eventstore import schema
from eventstore.schema import Blob

from .history import SEQ_SHIFT
from .history_rows import RowKind

IdOrParam = str | BindParameter[Any]
Limit = int | BindParameter[Any] | None
# The shift from an item's seq to its event's version, as an SQL integer literal
# (PostgreSQL has bigint >> integer, not bigint >> bigint).
_SHIFT = literal_column(str(SEQ_SHIFT), Integer)
# The columns of an array read (:meth:`HistoryQueries.array_read`).
_ARRAY_COLUMNS = ("seq", "version", "item_at", "item_end", "shown", "whole", "data")
# The largest payload a sliced read (:meth:`HistoryQueries.sliced_read`) cuts items out
# of. SQLite loads the whole payload for each item it cuts (4 µs an item at 64 KB, 44 µs
# at 1 MB): a turn of a few items, even with a large tool output, lies below it; a bulk
# load of hundreds of items (80 KB for 400 agent items) above.
SLICE_BOUND = 65536


class HistoryQueries:
    """The statements that read the history tables (``items``, ``branches``)."""

    items: Table
    branches: Table

    def _rows(self, *, full: bool = False) -> Select[Any]:
        """Items as stored: ``seq, item_at, item_size, item`` (and, ``full``, ``kind,
        tool_name, user_turn`` and a NULL where events give ``recorded_at``)."""
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

    def _between(
        self, stream_id: IdOrParam, branch_id: IdOrParam, column: Any, lo: Any, hi: Any
    ) -> tuple[Any, ...]:
        """The items of a branch with ``lo < column <= hi`` (``seq`` or ``user_turn``)."""
        t = self.items
        return (t.c.stream_id == stream_id, t.c.branch_id == branch_id, column > lo, column <= hi)

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
        the version of the window's first item to that of its last (it may hold
        payloads no row points into: those of items popped, or added to another
        branch, inside the window). A payload row has the kind ``PAYLOAD`` and the
        event's version; :func:`~projections.history_rows.resolve` slices the items
        out of it."""
        e = schema.events
        first, last = window
        # A payload row carries its event's version where item rows have item_at.
        columns: list[Any] = [
            literal(int(RowKind.PAYLOAD), BigInteger).label("seq"),
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
        where = self._between(stream_id, branch_id, self.items.c.seq, lo, hi)
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
        query = self._rows().where(*self._between(stream_id, branch_id, t.c.seq, lo, hi))
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
        """The newest own item of a branch: an ordered index scan, not ``max()``."""
        return self.items_query(stream_id, branch_id, 1)

    def fast_query(self, stream_id: IdOrParam, branch_id: IdOrParam, limit: Limit) -> Select[Any]:
        """One statement for the common case: the branch's own items, plus its
        segments if it has any (a ``MARKER`` row), in which case the own items are
        not the answer and the segments are read instead."""
        b = self.branches
        marker = select(
            literal(int(RowKind.MARKER), BigInteger).label("seq"),
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

    def turn_rows_query(
        self, stream_id: IdOrParam, branch_id: IdOrParam, lo: Any, hi: Any
    ) -> Select[Any]:
        """The user messages (``full`` rows) of a branch's own items with owner
        ordinals in ``(lo, hi]``, by ordinal, with their payloads."""
        t = self.items
        turns = self._between(stream_id, branch_id, t.c.user_turn, lo, hi)
        return self.with_payloads(
            self._rows(full=True).where(*turns).order_by(t.c.user_turn),
            stream_id,
            self._window(turns, key=t.c.user_turn),
        )

    def view_rows_query(
        self, stream_id: IdOrParam, branch_id: IdOrParam, lo: Any, hi: Any
    ) -> Select[Any]:
        """A branch's own items (``full`` rows) with ``lo < seq <= hi``, with their
        payloads."""
        t = self.items
        view = self._between(stream_id, branch_id, t.c.seq, lo, hi)
        return self.with_payloads(
            self._rows(full=True).where(*view).order_by(t.c.seq), stream_id, self._window(view)
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
        of one per item, so a whole-history read builds a few Python values per
        event, not per item (:func:`~projections.history_rows.item_arrays` reads the
        rows).

        An event's items lie in its payload as ``[item,item,...]``, one comma apart
        (``locate_items`` checked each offset when the rows were written). So the
        items a read shows of one event, when they are consecutive there, are the
        payload from the first one's start to the last one's end, and that is a JSON
        array's content: the row (kind ``SPAN``) gives the range, and the payload
        once. They are consecutive exactly when the range's length is the sum of their
        sizes plus the commas between them (``whole``); otherwise (an item removed in
        between, items copied into the projection) the event's rows come as well, one
        per item (seq >= 0). A ``COUNT`` row gives the number of items, so an item
        whose event is missing from the log is noticed, not left out; ``marker`` adds
        the branch's segments, as in :meth:`fast_query`.

        Columns: ``seq, version, item_at, item_end, shown, whole, data``. The spans
        are one pass over the window's events, each joined to its items by a range
        of the primary key: no sort; with ``limit``, the newest keys are read once
        (``window_bounds``), so the cost does not grow with the history.
        """
        t = self.items
        where: list[Any] = [t.c.stream_id == stream_id, t.c.branch_id == branch_id]
        if lo is not None:
            where += [t.c.seq > lo, t.c.seq <= hi]
        where, first, last, total = self._array_window(where, limit)
        spans = self._spans(where, stream_id, first, last)
        parts: list[Select[Any]] = []
        if marker:
            parts.append(self._array_marker(stream_id, branch_id))
        parts.append(
            _array_row(
                literal(int(RowKind.COUNT), BigInteger),
                _null(BigInteger),
                _null(Integer),
                _null(Integer),
                total,
                _null(Integer),
                _null(Blob),
            )
        )
        parts.append(_span_row(spans))
        parts.append(self._loose_rows(where, spans))
        return select(union_all(*parts).subquery("found"))

    def sliced_read(self, stream_id: IdOrParam, branch_id: IdOrParam, limit: Limit) -> Select[Any]:
        """The newest ``limit`` own items of a branch, newest first, one row per item
        with the item's bytes cut out of its event's payload by the database
        (``substr``), so that a read of a few items from small events sends no
        payload and builds one Python value per item; a ``MARKER`` row as in
        :meth:`fast_query`.

        Columns: ``seq, item, sliced, payload_size``. ``item`` is the item's copy (if
        the projection keeps one), ``sliced`` its bytes when its event's payload is at
        most :data:`SLICE_BOUND` bytes long (NULL for a larger one: cutting 20 items
        out of one payload of hundreds of items copies the payload 20 times inside the
        database, so such a read is left to :meth:`array_read`), ``payload_size`` the
        payload's length, NULL when the event is missing from the log. One range scan
        of the primary key and one probe of the events' ``(stream_id, version)``
        index per item (:func:`~projections.history_rows.sliced_items` reads the rows).
        """
        t, e, b = self.items, schema.events, self.branches
        newest = (
            select(t.c.seq, t.c.item_at, t.c.item_size, t.c.item)
            .where(t.c.stream_id == stream_id, t.c.branch_id == branch_id)
            .order_by(t.c.seq.desc())
            .limit(limit)
            .subquery("newest")
        )
        size = func.length(e.c.payload)
        sliced = case(
            (
                size <= SLICE_BOUND,
                func.substr(e.c.payload, newest.c.item_at + 1, newest.c.item_size),
            )
        )
        joined = newest.outerjoin(
            e,
            and_(
                e.c.stream_id == stream_id,
                e.c.version == newest.c.seq.op(">>")(_SHIFT),
                or_(*(e.c.event_type == name for name in ITEM_EVENTS)),
            ),
        )
        rows = select(
            newest.c.seq, newest.c.item, sliced.label("sliced"), size.label("payload_size")
        ).select_from(joined)
        marker = select(
            literal(int(RowKind.MARKER), BigInteger).label("seq"),
            b.c.segments.label("item"),
            _null(Blob).label("sliced"),
            _null(BigInteger).label("payload_size"),
        ).where(b.c.stream_id == stream_id, b.c.branch_id == branch_id, b.c.segments.is_not(None))
        return select(union_all(marker, rows).subquery("found"))

    def _array_window(self, where: list[Any], limit: Limit) -> tuple[list[Any], Any, Any, Any]:
        """The conditions that select an array read's items, its first and last
        ``seq``, and how many items it shows. With ``limit``, one pass over the
        newest ``limit`` keys gives all three (each used up to four times)."""
        t = self.items
        if limit is None:
            first, last = self._window(where)
            return where, first, last, select(func.count()).where(*where).scalar_subquery()
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
        return [*where, t.c.seq >= first], first, last, total

    def _spans(self, where: list[Any], stream_id: IdOrParam, first: Any, last: Any) -> Any:
        """Per event of the window: where its items lie in its payload, how many the
        read shows, and whether they are consecutive there (a CTE)."""
        t, ev = self.items, schema.events.alias("spanned")
        at, end = t.c.item_at, t.c.item_at + t.c.item_size
        count = func.count()
        whole = func.max(end) - func.min(at) == func.sum(t.c.item_size) + count - 1
        return (
            select(
                ev.c.version.label("version"),
                func.min(ev.c.position).label("position"),  # (one event: all the same)
                func.min(at).label("first_at"),
                func.max(end).label("end_at"),
                count.label("shown"),
                case((whole, 1), else_=0).label("whole"),
            )
            .select_from(ev.join(t, and_(*_of_event(t, where, ev.c.version))))
            .where(*_window_events(ev, stream_id, first, last))
            .group_by(ev.c.version)
            .cte("spans")
        )

    def _array_marker(self, stream_id: IdOrParam, branch_id: IdOrParam) -> Select[Any]:
        """The ``MARKER`` row of an array read: the branch's segments, if it has any."""
        b = self.branches
        return _array_row(
            literal(int(RowKind.MARKER), BigInteger),
            _null(BigInteger),
            _null(Integer),
            _null(Integer),
            _null(BigInteger),
            _null(Integer),
            b.c.segments,
        ).where(b.c.stream_id == stream_id, b.c.branch_id == branch_id, b.c.segments.is_not(None))

    def _loose_rows(self, where: list[Any], spans: Any) -> Select[Any]:
        """The rows, one per item, of the events whose items are not consecutive."""
        t = self.items
        return (
            _array_row(
                t.c.seq,
                _null(BigInteger),
                t.c.item_at,
                t.c.item_at + t.c.item_size,
                _null(BigInteger),
                _null(Integer),
                t.c.item,
            )
            .select_from(spans.join(t, and_(*_of_event(t, where, spans.c.version))))
            .where(spans.c.whole == 0)
        )


def _span_row(spans: Any) -> Select[Any]:
    """The ``SPAN`` rows of an array read, with each event's payload unless every item
    of it is a copy: by the event's primary key, which every planner takes (by
    (stream_id, version), PostgreSQL without statistics took the (stream_id,
    event_id) index and a filter)."""
    e = schema.events
    payload = (
        select(e.c.payload)
        .where(e.c.position == spans.c.position, spans.c.first_at.is_not(None))
        .scalar_subquery()
    )
    return _array_row(
        literal(int(RowKind.SPAN), BigInteger),
        spans.c.version,
        spans.c.first_at,
        spans.c.end_at,
        spans.c.shown,
        spans.c.whole,
        payload,
    )


def _array_row(*columns: Any) -> Select[Any]:
    """A SELECT of the array read's columns, in order."""
    return select(*(c.label(name) for c, name in zip(columns, _ARRAY_COLUMNS, strict=True)))


def _of_event(t: Table, where: Sequence[Any], version: Any) -> list[Any]:
    """``where``, narrowed to the items of the event at ``version``: a range of the
    primary key."""
    return [
        *where,
        t.c.seq >= version.op("<<")(_SHIFT),
        t.c.seq < (version + 1).self_group().op("<<")(_SHIFT),
    ]


# The events whose payload holds items that history rows point into.
ITEM_EVENTS = ("ItemsAdded", "HistoryCompacted")


def _window_events(e: Any, stream_id: IdOrParam, first: Any, last: Any) -> list[Any]:
    """The events of ``e`` (the events table or an alias of it) that the items from seq
    ``first`` to ``last`` of a stream point into (ItemsAdded, HistoryCompacted): a
    range of its ``(stream_id, version)`` index (an item's version is its seq shifted
    right)."""
    return [
        e.c.stream_id == stream_id,
        e.c.version >= first.op(">>")(_SHIFT),
        e.c.version <= last.op(">>")(_SHIFT),
        or_(*(e.c.event_type == name for name in ITEM_EVENTS)),
    ]


def _null(type_: Any) -> Any:
    """A NULL of ``type_`` (a UNION's branches agree on their columns' types)."""
    return cast(null(), type_)

"""Reading the history tables: the items, turns and branches a session's branch shows.

A branch without segments (every session's main branch until something forces more)
is read in one statement: its own items, with a ``MARKER`` row if it has segments
after all, in which case each segment is read as a range of its source's items,
newest segments first for a ``limit``. Turns are found with two index look-ups a
segment (the owner ordinals at its ends), whatever the length of the history.

Which read ``read_arrays`` runs is the database's dialect object's to say
(:attr:`eventstore.backends.Dialect.reads_item_arrays`): one row per event where the
planner joins each event to its items by index ranges, one row per item elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import Connection, func, select

from eventstore import MAIN_BRANCH, decode_item, dialect_of
from eventstore.errors import ProjectionMismatchError

from .history import OPEN, BranchInfo, Segment
from .history_queries import HistoryQueries
from .history_rows import (
    Turn,
    ViewRow,
    decode_segments,
    info_of,
    item_arrays,
    mismatch,
    one_array,
    resolve,
    resolve_items,
    sliced_items,
)
from .history_statements import HistoryStatements

# The most items a read of a whole branch takes as a sliced read (one row per item);
# a longer branch is read one row per event.
WHOLE_SLICED = 256
# Events of this many items or more on average are a bulk load's (an agent's turn holds a
# few): their items are read one row per event.
BULK_EVENT = 16
# How many branches a projector remembers the read plan of.
_REMEMBERED = 4096


class ReadPlans:
    """Which branches are read one row per event where the dialect could slice items:
    the reads of a few items whose newest items lay in a few large payloads when last
    read (a bulk load), and the reads of a whole branch that held ``WHOLE_SLICED``
    items or more, items in large payloads, or segments. A hint for choosing the plan,
    never an answer: every plan reads the same items; a wrong hint costs one statement."""

    def __init__(self) -> None:
        self.bulk: dict[tuple[str, str], None] = {}
        self.long: dict[tuple[str, str], None] = {}

    def per_event(self, branch: tuple[str, str], limit: int | None) -> bool:
        """Whether to read ``branch`` one row per event (not sliced) for ``limit``."""
        return branch in (self.long if limit is None else self.bulk)

    def note(self, branch: tuple[str, str], limit: int | None, arrays: Sequence[Any]) -> None:
        """After a read one row per event: remember whether the items came from a few
        large events (``BULK_EVENT`` items or more on average) or, for a whole branch,
        whether it is long; forget the branch otherwise, so that it is sliced again."""
        shown = sum(count for _, count in arrays)
        hit = shown >= BULK_EVENT * len(arrays) > 0
        if limit is None:
            shape, hit = self.long, hit or shown >= WHOLE_SLICED
        else:
            shape = self.bulk
        if hit:
            _remember(shape, branch)
        else:
            shape.pop(branch, None)

    def mark_long(self, branch: tuple[str, str]) -> None:
        """Read the whole of ``branch`` one row per event from now on."""
        _remember(self.long, branch)


def _remember(shape: dict[tuple[str, str], None], branch: tuple[str, str]) -> None:
    if len(shape) >= _REMEMBERED:
        shape.clear()
    shape[branch] = None


class HistoryReads(HistoryQueries):
    """The reads of the history tables, through their prepared statements (``sql``)."""

    sql: HistoryStatements
    plans: ReadPlans  # which branches are read one row per event (see ReadPlans)

    def read_info(self, conn: Connection, stream_id: str, branch_id: str) -> BranchInfo | None:
        """The row of a branch in the branches table, if it has one."""
        row = self.sql.info.first(conn, {"sid": stream_id, "bid": branch_id})
        if row is None:
            return None
        return info_of(dict(zip(self.branches.c.keys(), row, strict=True)))

    def segments(self, conn: Connection, stream_id: str, branch_id: str) -> tuple[Segment, ...]:
        """What a branch shows, as segments of its own and its ancestors' items."""
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
        segments = decode_segments(marker) or ()
        return self._read_segments(conn, stream_id, segments, limit)

    def _fast_rows(
        self, conn: Connection, stream_id: str, branch_id: str, limit: int | None
    ) -> list[Any]:
        """The rows of :meth:`fast_query` for the newest ``limit`` items (all if None)."""
        key = {"sid": stream_id, "bid": branch_id}
        if limit is None:
            return self.sql.fast_all.all(conn, key)
        return self.sql.fast_newest.all(conn, {**key, "n": limit})

    def _read_segments(
        self, conn: Connection, stream_id: str, segments: Sequence[Segment], limit: int | None
    ) -> list[tuple[int, bytes]]:
        """``(seq, item)`` of the newest ``limit`` items (all if None) of ``segments``,
        oldest first: for a limit, the newest segments first, until it is reached."""
        if limit is None:
            out: list[tuple[int, bytes]] = []
            for src, lo, hi in segments:
                key = {"sid": stream_id, "bid": src, "lo": lo, "hi": hi}
                found = resolve(self.sql.range_asc.all(conn, key))[1]
                out.extend((seq, item) for seq, item, *_ in found)
            return out
        newest: list[tuple[int, bytes]] = []
        for src, lo, hi in reversed(segments):
            if len(newest) >= limit:
                break
            key = {"sid": stream_id, "bid": src, "lo": lo, "hi": hi, "n": limit - len(newest)}
            found = resolve(self.sql.range_desc.all(conn, key))[1]
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
        segments = decode_segments(marker) or ()
        return [item for _, item in self._read_segments(conn, stream_id, segments, limit)]

    def read_arrays(
        self, conn: Connection, stream_id: str, branch_id: str, limit: int | None
    ) -> list[tuple[Any, int]]:
        """What :meth:`read_items` reads, as JSON arrays of consecutive items:
        ``(array, count)`` pairs, oldest first, whose elements are exactly the stored
        bytes of the items (:func:`eventstore.decode_arrays` decodes them). One
        statement when the branch has no segments; one row per event, not per item
        (:meth:`array_read`) where the database's dialect reads item arrays;
        elsewhere the per-item read, joined."""
        dialect = dialect_of(conn)
        if not dialect.reads_item_arrays:
            return one_array(self.read_items(conn, stream_id, branch_id, limit))
        key: dict[str, Any] = {"sid": stream_id, "bid": branch_id}
        marker: bytes | None = None
        branch = (stream_id, branch_id)
        if dialect.slices_items and not self.plans.per_event(branch, limit):
            marker, items = self._sliced(conn, branch, limit)
            if items is not None:
                return one_array(items)
        if marker is None:
            rows = (
                self.sql.arrays_all.all(conn, key)
                if limit is None
                else self.sql.arrays_newest.all(conn, {**key, "n": limit})
            )
            marker, arrays = item_arrays(rows)
            if marker is None:
                if dialect.slices_items:  # (a branch's segments say nothing of its shape)
                    self.plans.note(branch, limit, arrays)
                return arrays
        segments = decode_segments(marker) or ()  # the own items are not the answer
        if limit is None:
            arrays = []
            for src, lo, hi in segments:
                key = {"sid": stream_id, "bid": src, "lo": lo, "hi": hi}
                arrays += item_arrays(self.sql.range_arrays_all.all(conn, key))[1]
            return arrays
        # The newest items of a branch's segments, per item: the array read of a
        # segment's newest ``limit`` scans the segment's keys (docs/design.md).
        items = [item for _, item in self._read_segments(conn, stream_id, segments, limit)]
        return one_array(items)

    def read_short(
        self, conn: Connection, stream_id: str, branch_id: str
    ) -> list[tuple[Any, int]] | None:
        """What ``read_arrays(..., None)`` reads, if the branch holds fewer than
        ``WHOLE_SLICED`` items of small events, has no segments and the dialect slices
        items; None otherwise (read it with :meth:`read_arrays`). Its cost is bounded
        by ``WHOLE_SLICED`` items, so it may run where a whole read may not (on the
        caller's thread)."""
        branch = (stream_id, branch_id)
        if not dialect_of(conn).slices_items or self.plans.per_event(branch, None):
            return None
        items = self._sliced(conn, branch, None)[1]
        return None if items is None else one_array(items)

    def _sliced(
        self, conn: Connection, branch: tuple[str, str], limit: int | None
    ) -> tuple[bytes | None, list[bytes] | None]:
        """The marker (or None) and the items of a sliced read of the newest ``limit``
        items, or of the whole branch if it holds fewer than ``WHOLE_SLICED`` (None for
        the items: read them one row per event instead; for the whole branch, from now
        on, as :class:`ReadPlans` remembers)."""
        n = WHOLE_SLICED if limit is None else limit
        key = {"sid": branch[0], "bid": branch[1], "n": n}
        marker, items = sliced_items(self.sql.sliced_newest.all(conn, key))
        if limit is None and items is not None and len(items) >= WHOLE_SLICED:
            items = None  # longer than a sliced read of the whole branch takes
        if limit is None and items is None:  # long, in large payloads or in segments
            self.plans.mark_long(branch)
        return marker, items

    def read_top(
        self, conn: Connection, stream_id: str, branch_id: str
    ) -> tuple[int, bytes] | None:
        """``(seq, item)`` of the newest item a branch shows, or None if it has none.

        Under the stream's lock (``EventStore.append_decided``) the answer cannot change
        before the caller's events are written.
        """
        if dialect_of(conn).slices_items:  # the item cut out of its payload, if it can be
            rows = self.sql.sliced_newest.all(conn, {"sid": stream_id, "bid": branch_id, "n": 1})
            marker, items = sliced_items(rows)
            if marker is None and items is not None:
                return (int(rows[0][0]), items[0]) if items else None
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
        row = self.sql.current.first(conn, {"sid": stream_id})
        return MAIN_BRANCH if row is None else str(row[0])

    def read_branches(self, conn: Connection, stream_id: str) -> dict[str, BranchInfo]:
        """Every branch with a row (created branches, and any branch that shares)."""
        b = self.branches
        rows = conn.execute(select(b).where(b.c.stream_id == stream_id)).all()
        return {row.branch_id: info_of(row._mapping) for row in rows}

    def read_view(self, conn: Connection, stream_id: str, branch_id: str) -> list[ViewRow]:
        """Every item a branch shows, with its kind, tool name and owner ordinal."""
        out: list[ViewRow] = []
        for src, lo, hi in self.segments(conn, stream_id, branch_id):
            key = {"sid": stream_id, "bid": src, "lo": lo, "hi": hi}
            rows = self.sql.view_rows.all(conn, key)
            out.extend(ViewRow(r[0], r[1], r[2], r[3], r[4], src) for r in resolve(rows)[1])
        return out

    def read_user_turn(self, conn: Connection, stream_id: str, owner: str, seq: int) -> int | None:
        """The owner ordinal (``user_turn``) of the item ``seq`` that branch ``owner``
        holds; None if it holds no such item or the item is not a user message."""
        t = self.items
        value = conn.execute(
            select(t.c.user_turn).where(
                t.c.stream_id == stream_id,
                t.c.branch_id == owner,
                t.c.seq == seq,
            )
        ).scalar()
        return None if value is None else int(value)

    def _ordinal(self, conn: Connection, stream_id: str, src: str, upto: int) -> int:
        """The owner ordinal of ``src``'s last user message at or below ``upto``."""
        row = self.sql.ordinal_at.first(conn, {"sid": stream_id, "bid": src, "hi": upto})
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
        """How many user turns a branch shows."""
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
                rows = resolve(self.sql.turn_rows.all(conn, key))[1]
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
            for r in resolve(self.sql.turn_rows.all(conn, key))[1]:
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
        """How many items a branch shows (a count a segment)."""
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

    def own_item_counts(
        self, conn: Connection, branch_id: str, stream_ids: Sequence[str] | None = None
    ) -> dict[str, int]:
        """Per session that has any (of ``stream_ids``, if given): how many items its
        branch ``branch_id`` holds as their owner (all it shows while the branch has no
        segments)."""
        t = self.items
        where = [t.c.branch_id == branch_id]
        if stream_ids is not None:
            where.insert(0, t.c.stream_id.in_(stream_ids))
        query = select(t.c.stream_id, func.count()).where(*where).group_by(t.c.stream_id)
        return {stream_id: count for stream_id, count in conn.execute(query)}

"""The history projection's statements, built once per projector and compiled once
per dialect (:class:`~eventstore.prepared.Prepared`): the writes of the append
transaction and of a replay, and the reads the hot paths run.

A user message's turn number is one more than the branch's last, found by the insert
itself (one index probe; ``executemany`` sees the rows before it), so an append reads
nothing back. MariaDB/MySQL take a subquery on the table being inserted into only as a
derived table, hence the extra SELECT around it. A replay numbers the turns itself:
plain rows in bulk, no subquery, and no parameter for the columns that are NULL (each
one bound costs).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Insert,
    Integer,
    Table,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.sql.elements import BindParameter

from eventstore.prepared import BulkInsert, Prepared
from eventstore.schema import Key

from .history_queries import HistoryQueries
from .history_schema import COPIED, LOCATED, STORED, HistoryTables

# The parameter of the update of a branch's row that sets each column.
UPDATE_PARAMS = {
    "parent_branch_id": "parent",
    "fork_seq": "fork",
    "name": "bname",
    "created_version": "cv",
    "created_at": "ca",
    "deleted": "del",
    "pinned": "pin",
    "segments": "segs",
}


class HistoryStatements:
    """Every prepared statement of one history projector (its tables and queries)."""

    def __init__(self, tables: HistoryTables, q: HistoryQueries) -> None:
        t, b, current = tables.items, tables.branches, tables.current
        sid, bid = bindparam("sid", type_=Key(255)), bindparam("bid", type_=Key(255))
        lo: BindParameter[int] = bindparam("lo", type_=BigInteger)
        hi: BindParameter[int] = bindparam("hi", type_=BigInteger)
        n: BindParameter[int] = bindparam("n", type_=BigInteger)
        key = (t.c.stream_id == sid, t.c.branch_id == bid)
        # The append transaction and a replay.
        self.insert = Prepared(_insert_numbering_turns(t))
        self.insert_located = BulkInsert(t, LOCATED)
        self.insert_copied = BulkInsert(t, COPIED)
        self.last_turn = Prepared(
            select(t.c.user_turn)
            .where(*key, t.c.user_turn.is_not(None))
            .order_by(t.c.user_turn.desc())
            .limit(1)
        )
        self.delete_above = Prepared(delete(t).where(*key, t.c.seq > bindparam("above")))
        self.delete_one = Prepared(delete(t).where(*key, t.c.seq == bindparam("q")))
        # The pop of a branch without a row in the branches table (every plain session):
        # nothing is shared or segmented there, so its own row simply goes.
        self.delete_unshared = Prepared(
            delete(t).where(
                *key,
                t.c.seq == bindparam("q"),
                ~exists().where(b.c.stream_id == sid, b.c.branch_id == bid),
            )
        )
        self.prev = Prepared(
            select(t.c.seq)
            .where(*key, t.c.seq > lo, t.c.seq < hi)
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        # The branches and the current branch.
        self.info = Prepared(select(b).where(b.c.stream_id == sid, b.c.branch_id == bid))
        self.insert_info = Prepared(insert(b))
        self.update_info = Prepared(_update_info(b, sid, bid))
        self.current = Prepared(select(current.c.branch_id).where(current.c.stream_id == sid))
        self.set_current = Prepared(
            update(current).where(current.c.stream_id == sid).values(branch_id=bindparam("cur"))
        )
        self.insert_current = Prepared(insert(current))
        # Reads.
        self.range_desc = Prepared(q.range_read(sid, bid, lo, hi, n))
        self.range_asc = Prepared(q.range_read(sid, bid, lo, hi, None))
        self.ordinal_at = Prepared(
            select(t.c.user_turn)
            .where(*key, t.c.seq <= hi, t.c.user_turn.is_not(None))
            .order_by(t.c.seq.desc())
            .limit(1)
        )
        self.turn_rows = Prepared(q.turn_rows_query(sid, bid, lo, hi))
        self.view_rows = Prepared(q.view_rows_query(sid, bid, lo, hi))
        self.fast_newest = Prepared(q.fast_query(sid, bid, n))
        self.fast_all = Prepared(q.fast_query(sid, bid, None))
        self.arrays_newest = Prepared(q.array_read(sid, bid, limit=n, marker=True))
        self.sliced_newest = Prepared(q.sliced_read(sid, bid, n))
        self.arrays_all = Prepared(q.array_read(sid, bid, marker=True))
        self.range_arrays_all = Prepared(q.array_read(sid, bid, lo, hi))


def _insert_numbering_turns(t: Table) -> Insert:
    """The insert of one item (the columns ``STORED``), whose ``user_turn`` is the
    branch's next turn number if ``is_user`` is 1."""
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
    return insert(t).values(
        {
            **{name: bindparam(name) for name in STORED},
            t.c.user_turn: case((bindparam("is_user", type_=Integer) == 1, next_turn)),
        }
    )


def _update_info(b: Table, sid: Any, bid: Any) -> Any:
    """The update of a branch's row (every column after its key)."""
    return (
        update(b)
        .where(b.c.stream_id == sid, b.c.branch_id == bid)
        .values({column: bindparam(param) for column, param in UPDATE_PARAMS.items()})
    )

"""The history projection: the items of each branch of each session, in order.

Two readings of the same rules:

* :func:`apply` is the pure fold ``apply(state, event) -> state`` over a persistent
  (shared-structure) list, so folding a stream is O(events) and a state can be kept
  for any version (time travel) without copying;
* :class:`HistoryProjector` keeps the table ``convstore_items`` current inside the
  append transaction, so reads never replay the log.

Item keys (``seq``) are derived from the event alone: item ``i`` of the event at
stream version ``v`` has ``seq = v * 2**20 + i``. Keys are increasing along a stream,
unique, and need no read of the projection to assign (one ``INSERT`` per append).
An ``ItemsAdded`` event therefore carries at most 2**20 items; sessions split larger
batches into several events of one atomic append.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.sql.elements import BindParameter

from eventstore import (
    AnyEvent,
    ItemPopped,
    ItemsAdded,
    ItemsExpired,
    RecordedEvent,
    Rows,
    SessionCleared,
)
from eventstore.prepared import Prepared
from eventstore.schema import MYSQL_TABLE_OPTIONS, Blob, Key, StreamId

SEQ_SHIFT = 20
IdOrParam = str | BindParameter[Any]  # an id, or a bound parameter standing for one
Limit = int | BindParameter[Any] | None
MAX_ITEMS_PER_EVENT = 1 << SEQ_SHIFT


def item_seq(version: int, index: int) -> int:
    """The key of item ``index`` of the event at stream version ``version``."""
    return (version << SEQ_SHIFT) | index


# -- the pure fold ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """One item in a persistent singly linked list, newest first."""

    seq: int
    item: bytes
    prev: Node | None


@dataclass(frozen=True, slots=True)
class HistoryState:
    """Items of every branch of one session (``branches[branch_id]`` is the newest node)."""

    branches: dict[str, Node | None] = field(default_factory=dict)

    def items(self, branch_id: str = "main") -> list[bytes]:
        """The item JSON of a branch, oldest first."""
        return [node.item for node in reversed(list(_walk(self.branches.get(branch_id))))]

    def rows(self, stream_id: str) -> Iterator[tuple[str, str, int, bytes]]:
        """The ``(stream_id, branch_id, seq, item)`` rows the table should hold."""
        for branch_id, top in self.branches.items():
            for node in _walk(top):
                yield (stream_id, branch_id, node.seq, node.item)


def _walk(node: Node | None) -> Iterator[Node]:
    while node is not None:
        yield node
        node = node.prev


def apply(state: HistoryState, event: AnyEvent, version: int) -> HistoryState:
    """The history after ``event`` (stored at stream ``version``). Never mutates ``state``."""
    if isinstance(event, ItemsAdded):
        top = state.branches.get(event.branch_id)
        for index, raw in enumerate(event.items):
            top = Node(item_seq(version, index), bytes(raw), top)
        return HistoryState({**state.branches, event.branch_id: top})
    if isinstance(event, ItemPopped):
        top = state.branches.get(event.branch_id)
        if top is not None and top.seq == event.seq:
            top = top.prev
        else:  # not the newest item (only possible in a hand-made log): drop it anyway
            kept = [n for n in _walk(top) if n.seq != event.seq]
            top = None
            for node in reversed(kept):
                top = Node(node.seq, node.item, top)
        return HistoryState({**state.branches, event.branch_id: top})
    if isinstance(event, SessionCleared):
        if event.branch_id is None:
            return HistoryState({name: None for name in state.branches})
        return HistoryState({**state.branches, event.branch_id: None})
    if isinstance(event, ItemsExpired):
        kept = [n for n in _walk(state.branches.get(event.branch_id)) if n.seq > event.upto_seq]
        top = None
        for node in reversed(kept):
            top = Node(node.seq, node.item, top)
        return HistoryState({**state.branches, event.branch_id: top})
    return state


def fold(events: Sequence[RecordedEvent], state: HistoryState | None = None) -> HistoryState:
    """Fold recorded events of one stream into its history."""
    state = state or HistoryState()
    for recorded in events:
        state = apply(state, recorded.event, recorded.version)
    return state


# -- the table kept by the append transaction ---------------------------------------


def items_table(metadata: MetaData, name: str = "convstore_items") -> Table:
    return Table(
        name,
        metadata,
        Column("stream_id", StreamId, primary_key=True),
        Column("branch_id", Key(255), primary_key=True),
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("position", BigInteger, nullable=False),
        Column("item", Blob, nullable=False),
        sqlite_with_rowid=False,  # clustered on the key: a range scan reads the items in place
        **MYSQL_TABLE_OPTIONS,
    )


class HistoryProjector:
    """Keeps ``convstore_items`` equal to :func:`fold` of the log, in the append transaction."""

    name = "history"
    schema_version = 1

    def __init__(self, *, table_name: str = "convstore_items") -> None:
        self.metadata = MetaData()
        self.items = t = items_table(self.metadata, table_name)
        branch = (t.c.stream_id == bindparam("sid"), t.c.branch_id == bindparam("bid"))
        self._insert = Prepared(insert(t))
        self._delete_item = Prepared(delete(t).where(*branch, t.c.seq == bindparam("item_seq")))
        self._delete_branch = Prepared(delete(t).where(*branch))
        self._delete_stream = Prepared(delete(t).where(t.c.stream_id == bindparam("sid")))
        self._delete_upto = Prepared(delete(t).where(*branch, t.c.seq <= bindparam("upto")))
        # The reads are built by the same methods the query-plan tests compile.
        sid, bid = bindparam("sid", type_=Key(255)), bindparam("bid", type_=Key(255))
        self._all = Prepared(self.items_query(sid, bid, None))
        self._newest = Prepared(self.items_query(sid, bid, bindparam("n")))
        self._top = Prepared(self.top_query(sid, bid))

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        rows: list[dict[str, Any]] = []
        for recorded in events:
            event = recorded.event
            if isinstance(event, ItemsAdded):
                rows.extend(
                    {
                        "stream_id": recorded.stream_id,
                        "branch_id": event.branch_id,
                        "seq": item_seq(recorded.version, index),
                        "position": recorded.position,
                        "item": bytes(raw),
                    }
                    for index, raw in enumerate(event.items)
                )
                continue
            # A removal must see the rows added before it in this same batch.
            self._flush(conn, rows)
            sid = recorded.stream_id
            if isinstance(event, ItemPopped):
                self._delete_item.execute(
                    conn, {"sid": sid, "bid": event.branch_id, "item_seq": event.seq}
                )
            elif isinstance(event, SessionCleared):
                if event.branch_id is None:
                    self._delete_stream.execute(conn, {"sid": sid})
                else:
                    self._delete_branch.execute(conn, {"sid": sid, "bid": event.branch_id})
            elif isinstance(event, ItemsExpired):
                self._delete_upto.execute(
                    conn, {"sid": sid, "bid": event.branch_id, "upto": event.upto_seq}
                )
        self._flush(conn, rows)

    def _flush(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._insert.execute_many(conn, rows)
            rows.clear()

    def reset(self, conn: Connection) -> None:
        conn.execute(delete(self.items))

    # -- reads (each one statement, so one consistent snapshot on every backend) ----

    def items_query(self, stream_id: IdOrParam, branch_id: IdOrParam, limit: Limit) -> Select[Any]:
        """The items of a branch: all oldest first, or (with ``limit``) the newest, newest
        first. Either way one range scan of the primary key, never a sort. Ids and limit
        are values, or bound parameters for the prepared form."""
        t = self.items
        query = select(t.c.item).where(t.c.stream_id == stream_id, t.c.branch_id == branch_id)
        if limit is None:
            return query.order_by(t.c.seq)
        return query.order_by(t.c.seq.desc()).limit(limit)

    def read_items(
        self, conn: Connection, stream_id: str, branch_id: str, limit: int | None
    ) -> list[bytes]:
        """The newest ``limit`` items (all if None), oldest first."""
        key = {"sid": stream_id, "bid": branch_id}
        if limit is None:
            return [bytes(row[0]) for row in self._all.all(conn, key)]
        rows = self._newest.all(conn, {**key, "n": limit})
        return [bytes(row[0]) for row in reversed(rows)]

    def read_entries(
        self, conn: Connection, stream_id: str, branch_id: str, limit: int | None
    ) -> list[tuple[int, bytes]]:
        """``(seq, item)`` of the newest ``limit`` items (all if None), oldest first.

        ``seq`` is the item's key in the log (see :func:`item_seq`): what ItemPopped and
        ItemsExpired name.
        """
        t = self.items
        query = select(t.c.seq, t.c.item).where(
            t.c.stream_id == stream_id, t.c.branch_id == branch_id
        )
        if limit is None:
            rows = conn.execute(query.order_by(t.c.seq)).all()
        else:
            rows = list(reversed(conn.execute(query.order_by(t.c.seq.desc()).limit(limit)).all()))
        return [(int(row[0]), bytes(row[1])) for row in rows]

    def read_top(
        self, conn: Connection, stream_id: str, branch_id: str
    ) -> tuple[int, bytes] | None:
        """``(seq, item)`` of the newest item of a branch, or None if it has none.

        Under the stream's lock (``EventStore.append_decided``) the answer cannot change
        before the caller's events are written.
        """
        row = self._top.first(conn, {"sid": stream_id, "bid": branch_id})
        return None if row is None else (row[0], bytes(row[1]))

    def top_query(self, stream_id: IdOrParam, branch_id: IdOrParam) -> Select[Any]:
        """The newest item of a branch (what :meth:`read_top` runs). An ordered index
        scan, not ``max()``: PostgreSQL's max() shortcut is lost when the key's collation
        differs from the comparison's, and then max() reads the whole session."""
        t = self.items
        return (
            select(t.c.seq, t.c.item)
            .where(t.c.stream_id == stream_id, t.c.branch_id == branch_id)
            .order_by(t.c.seq.desc())
            .limit(1)
        )

    def count_items(self, conn: Connection, stream_id: str, branch_id: str) -> int:
        t = self.items
        return int(
            conn.execute(
                select(func.count())
                .select_from(t)
                .where(t.c.stream_id == stream_id, t.c.branch_id == branch_id)
            ).scalar_one()
        )

    # -- checking, one stream at a time ---------------------------------------------

    def expected_rows(self, stream_id: str, events: Sequence[RecordedEvent]) -> Rows:
        """The rows ``convstore_items`` should hold for one stream, folded from its log."""
        positions: dict[int, int] = {}
        state = HistoryState()
        for recorded in events:
            state = apply(state, recorded.event, recorded.version)
            if isinstance(recorded.event, ItemsAdded):
                positions[recorded.version] = recorded.position
        return {
            "items": {
                (sid, bid, seq): (positions[seq >> SEQ_SHIFT], item)
                for sid, bid, seq, item in state.rows(stream_id)
            }
        }

    def live_rows(self, conn: Connection, stream_id: str) -> Rows:
        """The rows ``convstore_items`` holds for one stream."""
        t = self.items
        rows = conn.execute(
            select(t).where(t.c.stream_id == stream_id).order_by(t.c.branch_id, t.c.seq)
        )
        return {
            "items": {(r.stream_id, r.branch_id, r.seq): (r.position, bytes(r.item)) for r in rows}
        }

    def stream_ids(self, conn: Connection) -> set[str]:
        """Every stream that has rows in ``convstore_items``."""
        t = self.items
        return set(conn.execute(select(t.c.stream_id).distinct()).scalars())

    def scratch(self) -> HistoryProjector:
        """The same projection into scratch tables (for verify)."""
        return HistoryProjector(table_name="convstore_scratch_items")

    def snapshot(self, conn: Connection) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
        """Every row of every table, as ``{table: {primary key: other columns}}``."""
        t = self.items
        rows = conn.execute(select(t).order_by(t.c.stream_id, t.c.branch_id, t.c.seq))
        return {
            "items": {(r.stream_id, r.branch_id, r.seq): (r.position, bytes(r.item)) for r in rows}
        }

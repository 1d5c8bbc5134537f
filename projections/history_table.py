"""The history projection kept in tables by the append transaction.

The same rules as :func:`projections.history.apply`, on the tables of
projections/history_schema.py. The projector is assembled from rooms of one job each:
the tables (history_schema), the statements that read them (history_queries), those
statements prepared (history_statements), the resolution of read rows into items
(history_rows), the reads (history_reads) and the writes of ``apply`` and ``replay``
(history_writer). Here: the projector itself and the rows it is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from eventstore import RecordedEvent, Rows, schema
from eventstore.records import stored_bytes

from .base import TableProjector
from .history import SEQ_SHIFT, HistoryState, fold
from .history_reads import HistoryReads, ReadPlans
from .history_rows import Turn, ViewRow, decode_entry, info_of, info_tuple, stored_item
from .history_schema import history_tables
from .history_statements import HistoryStatements
from .history_writer import Batch, Replay, apply_events, locate_items

__all__ = [
    "HistoryProjector",
    "Turn",
    "ViewRow",
    "decode_entry",
    "locate_items",
    "state_rows",
]


class HistoryProjector(HistoryReads, TableProjector):
    """Keeps the history tables equal to :func:`~projections.history.fold` of the log."""

    name = "history"
    # Revision 3: items point into their event's payload instead of holding a copy.
    # Revision 4: no ``position`` column (an item's event is the one at version
    # seq >> SEQ_SHIFT), so applying an append needs no event position: on MariaDB
    # positions are handed out at commit, after the projections are written.
    schema_version = 4

    def __init__(self, *, prefix: str = "convstore") -> None:
        tables = history_tables(prefix)
        self.metadata = tables.metadata
        self.items, self.branches, self.current = tables.items, tables.branches, tables.current
        self.tables = {
            "items": self.items,
            "branches": self.branches,
            "current_branch": self.current,
        }
        self.sql = HistoryStatements(tables, self)
        self.plans = ReadPlans()

    def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        """Apply an append's events to the tables, in its transaction."""
        apply_events(Batch(self, conn), events)

    def replay(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        """:meth:`apply` for a catch-up (``rebuild``): the same rows, written in bulk
        (projections/history_writer.py). tests/projections/test_history.py compares a
        rebuild with the live tables column for column."""
        apply_events(Replay(self, conn), events)

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
                    stored_item(r.item, payloads.get(r.seq >> SEQ_SHIFT), r.item_at, r.item_size),
                    r.kind,
                    r.tool_name,
                    r.user_turn,
                )
                for r in items
            },
            "branches": {
                (r.stream_id, r.branch_id): info_tuple(info_of(r._mapping)) for r in infos
            },
            "current_branch": {(r.stream_id,): (r.branch_id,) for r in current},
        }


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
    branches = {(stream_id, b): info_tuple(info) for b, info in state.branches.items()}
    current = {} if state.switched_to is None else {(stream_id,): (state.switched_to,)}
    return {"items": items, "branches": branches, "current_branch": current}

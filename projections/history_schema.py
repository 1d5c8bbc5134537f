"""The history projection's tables, declared once for every backend.

* ``convstore_items``: every stored item once, under the branch that added it, as a
  pointer into the payload of the event that added it (the item's exact bytes are a
  slice of that payload, so the log holds each item once). An item whose bytes cannot
  be found verbatim in its event's payload (a payload written in another layout) is
  copied instead; ``item`` holds the copy and is NULL otherwise;
* ``convstore_branches``: the tree (parent, fork point, name, creation) and, for a
  branch that needs them, its segments and how far its rows are shared (``pinned``);
* ``convstore_current_branch``: each session's current branch (absent: main).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from eventstore.schema import MYSQL_TABLE_OPTIONS, Blob, Key, StreamId

# The columns an append writes as given (user_turn it computes).
STORED = (
    "stream_id",
    "branch_id",
    "seq",
    "item_at",
    "item_size",
    "item",
    "kind",
    "tool_name",
)
# The columns a replay writes, user_turn computed in Python (projections/history_writer.py):
# those of an item found in its payload (``item`` is NULL), and those of a copy.
LOCATED = (
    "stream_id",
    "branch_id",
    "seq",
    "item_at",
    "item_size",
    "kind",
    "tool_name",
    "user_turn",
)
COPIED = ("stream_id", "branch_id", "seq", "item", "kind", "tool_name", "user_turn")


@dataclass(frozen=True, slots=True)
class HistoryTables:
    """The three tables of one history projection, in one MetaData."""

    metadata: MetaData
    items: Table
    branches: Table
    current: Table


def history_tables(prefix: str) -> HistoryTables:
    """The history's tables, named ``{prefix}_items``, ``{prefix}_branches`` and
    ``{prefix}_current_branch``."""
    m = MetaData()
    t = Table(
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
    b = Table(
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
    c = Table(
        f"{prefix}_current_branch",
        m,
        Column("stream_id", StreamId, primary_key=True),
        Column("branch_id", Key(255), nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )
    return HistoryTables(m, t, b, c)

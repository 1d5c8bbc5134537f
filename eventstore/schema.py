"""The log's tables, declared once with SQLAlchemy Core for every backend.

Times are integers (microseconds since the Unix epoch, UTC): exact and identical on
SQLite, PostgreSQL and MariaDB, whose timestamp types disagree on zones and precision.
Hashes are lowercase hex so they read well in any SQL client.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    false,
    inspect,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import DropIndex

SCHEMA_COMPONENT = "eventstore"
SCHEMA_VERSION = 4
# Revision 2 added convstore_head.generation and convstore_tracking.live (the live
# set of projections belongs to the database: see eventstore/registry.py).
# Revision 3: on PostgreSQL positions come from each append's transaction id and no
# longer from convstore_head.position (see eventstore/backends/postgres.py); tables
# keep their shape, and a release that still takes positions from the head row must
# not write to the log any more (it refuses a newer revision). It also drops the
# index on convstore_streams.updated_at (one page less written by every append).
# Revision 4: on PostgreSQL convstore_head.position is an offset added to transaction
# ids (0, unless the log was restored ahead of its cluster's transaction counter), which
# a revision-3 release would ignore; on SQLite and MariaDB nothing changes.

# Stream ids compare byte for byte on MySQL/MariaDB too ("User" and "user" are two sessions).
MYSQL_TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


class Key(String):
    """A string compared byte for byte: ids of streams, events and branches.

    On MySQL/MariaDB it gets a binary NO PAD collation (see backends/mysql.py), so
    "User", "user" and "user " are three different sessions, as everywhere else.
    """

    cache_ok = True


Position = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY is the rowid
Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
StreamId = Key(255)

metadata = MetaData()

events = Table(
    "convstore_events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("stream_id", StreamId, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_id", Key(36), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("payload", Blob, nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("stream_id", "version", name="convstore_events_stream_version"),
    UniqueConstraint("stream_id", "event_id", name="convstore_events_stream_event_id"),
    **MYSQL_TABLE_OPTIONS,
)

streams = Table(
    "convstore_streams",
    metadata,
    Column("stream_id", StreamId, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

# One row: the last position handed out (on PostgreSQL: the offset added to transaction
# ids). Writers lock it for the rest of their transaction, which is what makes positions
# follow commit order (see backends; PostgreSQL locks it shared).
# ``generation`` counts changes to the set of live projections (eventstore/registry.py).
head = Table(
    "convstore_head",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("generation", BigInteger, nullable=False, server_default="0"),
    **MYSQL_TABLE_OPTIONS,
)

# One row per projection the database keeps. A live one is kept current by every
# append; one that is behind holds the log up to ``position`` (eventstore/registry.py).
tracking = Table(
    "convstore_tracking",
    metadata,
    Column("projection", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("live", Boolean, nullable=False, server_default=false()),
    **MYSQL_TABLE_OPTIONS,
)

# Which release wrote the tables, per component, so a later one can migrate in place.
schema_versions = Table(
    "convstore_schema",
    metadata,
    Column("component", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

HEAD_ROW = "log"

# What is left of a session that retention or an explicit delete removed: its final
# version and head hash, so audit can tell a session removed on purpose (and the
# positions its events held) from one deleted behind the store's back. A session id
# used again after its removal starts a new stream and may get a second tombstone. Written only by
# the retention/erasure commands, in the transaction that deletes the events.
tombstones = Table(
    "convstore_tombstones",
    metadata,
    Column("stream_id", StreamId, primary_key=True),
    Column("removed_at", BigInteger, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),
    **MYSQL_TABLE_OPTIONS,
)


def migrate(conn: Connection, found: int) -> None:
    """Bring tables written at schema revision ``found`` to :data:`SCHEMA_VERSION`.

    In place and additive: no event row is rewritten.
    """
    if found < 2:
        conn.execute(
            text("ALTER TABLE convstore_head ADD COLUMN generation BIGINT NOT NULL DEFAULT 0")
        )
        conn.execute(
            text("ALTER TABLE convstore_tracking ADD COLUMN live BOOLEAN NOT NULL DEFAULT FALSE")
        )
        # Revision 1 advanced every tracking row with each append: those at the head
        # were kept by every writer that knew them, and are live from now on.
        conn.execute(
            text(
                "UPDATE convstore_tracking SET live = TRUE WHERE position = "
                "(SELECT position FROM convstore_head WHERE name = 'log')"
            )
        )
    if found < 3:
        # Every append rewrote a page of this index, which no query reads.
        # (Declared on a detached copy of the table: an Index joins its table's metadata.)
        name = "convstore_streams_updated_at"
        if any(index["name"] == name for index in inspect(conn).get_indexes(streams.name)):
            detached = Table(streams.name, MetaData(), Column("updated_at", BigInteger))
            conn.execute(DropIndex(Index(name, detached.c.updated_at)))

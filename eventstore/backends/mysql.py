"""MySQL and MariaDB (asyncmy), through SQLAlchemy.

Positions come from the head row, advanced with the ``LAST_INSERT_ID(expr)`` idiom
(``UPDATE ... RETURNING`` does not exist here), whose value is private to the
connection. The row lock that takes is held until commit, which makes positions
gapless and commit-ordered: a reader never sees a position before every lower one
has committed.

On MariaDB an append takes that lock only at its very end. The transaction first
locks its stream's row, checks the version and applies the projections (which do not
need positions, see ``Projector.reads_positions``); then one compound statement
(``BEGIN NOT ATOMIC ... END``), which the server runs whole without waiting for the
client, advances the head row, writes the stream's row and the events numbered from
it, and commits (an error inside it rolls everything back, server-side, before it is
reported). So the log's lock is held for the server's own few microseconds, never
while a client computes, waits for the network or is stalled: appends to different
sessions do not wait for each other (only for that statement), where they used to
wait for every earlier append's whole transaction. InnoDB releases a transaction's
locks before it flushes the commit to disk, so the fsync is not inside the lock
either. An append larger than :data:`AT_COMMIT_BYTES` (one statement carries every
event) or a projection that reads positions takes its positions first, as MySQL does
(it has no compound statements outside stored programs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import Connection, exc, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import TypeCompiler

from ..batch import LiveSetChanged, StreamWrite
from ..errors import (
    ConvstoreError,
    IntegrityError,
    LockTimeoutError,
    OperationalError,
    PersistenceError,
    SchemaError,
    SerializationError,
    TransientError,
)
from ..prepared import Prepared
from ..schema import Key
from .base import Dialect, Timeouts, translate_errors

_ADVANCE = Prepared(
    text(
        "UPDATE convstore_head SET position = LAST_INSERT_ID(position + :count) WHERE name = 'log'"
    )
)

# MariaDB names it tx_isolation (transaction_isolation only from 11.1), MySQL 8
# transaction_isolation.
_ISOLATION = {
    True: Prepared(text("SELECT @@tx_isolation")),
    False: Prepared(text("SELECT @@transaction_isolation")),
}
_NEXT_READ_COMMITTED = Prepared(text("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"))
_READ_COMMITTED_KEY = "convstore_read_committed"

_GENERATION = Prepared(text("SELECT generation FROM convstore_head WHERE name = 'log'"))

# The most bytes of events (as sent) an append writes in the statement that commits
# (and at most half of max_allowed_packet); a larger one takes its positions first:
# one statement carries them all, and the server should run it in a moment. 2 MiB
# holds any group of appends that eventstore/coalesce.py writes together (1 MiB of
# payloads, escaping at most doubles them).
AT_COMMIT_BYTES = 2 << 20
# What the committing statement signals when the live projection set changed (the
# append then rolls back and is applied again to the new set).
_LIVE_SET_CHANGED = "convstore live projection set changed"
_SIGNAL_ERRNO = 1644  # ER_SIGNAL_EXCEPTION, SQLSTATE 45000
_EVENT_VALUES = ("version", "event_id", "event_type", "schema_version", "payload", "hash")
_STREAM_SQL = {
    False: "UPDATE convstore_streams SET version = :new_version, head_hash = :new_head_hash, "
    "updated_at = :now WHERE stream_id = :sid",
    True: "INSERT INTO convstore_streams (stream_id, version, head_hash, created_at, "
    "updated_at) VALUES (:sid, :new_version, :new_head_hash, :now, :now)",
}
_REMEMBERED_STATEMENTS = 32


def _commit_statement(count: int, new_stream: bool) -> Prepared:
    """The compound statement that ends an append of ``count`` events (see the module
    docstring): the events' own values are bound as ``<column><n>``."""
    values = ",\n".join(
        f"(LAST_INSERT_ID() - {count - 1 - n}, :sid, "
        + ", ".join(f":{column}{n}" for column in _EVENT_VALUES[:5])
        + f", :now, :hash{n})"
        for n in range(count)
    )
    return Prepared(
        text(
            "BEGIN NOT ATOMIC\n"
            "DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;\n"
            "UPDATE convstore_head SET position = LAST_INSERT_ID(position + "
            f"{count}) WHERE name = 'log' AND generation = :generation;\n"
            "IF ROW_COUNT() = 0 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = "
            f"'{_LIVE_SET_CHANGED}'; END IF;\n"
            f"{_STREAM_SQL[new_stream]};\n"
            "INSERT INTO convstore_events (position, stream_id, version, event_id, "
            "event_type, schema_version, payload, recorded_at, hash) VALUES\n"
            f"{values};\n"
            "COMMIT;\n"
            "SELECT LAST_INSERT_ID();\n"
            "END"
        )
    )


_ESCAPED = (b"\\", b"'", b'"', b"\0", b"\n", b"\r", b"\x1a")

_BY_ERRNO: dict[int, type[ConvstoreError]] = {
    1062: IntegrityError,  # ER_DUP_ENTRY
    1586: IntegrityError,  # ER_DUP_ENTRY_WITH_KEY_NAME
    1452: IntegrityError,  # ER_NO_REFERENCED_ROW_2
    1213: TransientError,  # ER_LOCK_DEADLOCK
    1205: LockTimeoutError,  # ER_LOCK_WAIT_TIMEOUT: innodb_lock_wait_timeout expired
    1153: SerializationError,  # ER_NET_PACKET_TOO_LARGE: over max_allowed_packet
    1146: SchemaError,  # ER_NO_SUCH_TABLE
    1054: SchemaError,  # ER_BAD_FIELD_ERROR
    2003: OperationalError,  # CR_CONN_HOST_ERROR
    2006: OperationalError,  # CR_SERVER_GONE_ERROR
    2013: OperationalError,  # CR_SERVER_LOST
}


@compiles(Key, "mysql")
@compiles(Key, "mariadb")
def _compile_key(type_: Key, compiler: TypeCompiler, **kw: object) -> str:
    """Binary NO PAD: the default PAD SPACE collations would make 'a' equal 'a '."""
    mariadb = getattr(compiler.dialect, "is_mariadb", False)
    nopad = "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"
    return f"VARCHAR({type_.length}) CHARACTER SET utf8mb4 COLLATE {nopad}"


class MySQLDialect(Dialect):
    name: ClassVar[str] = "mysql"
    # MariaDB joined the items of the one-row-per-event read to every event of the
    # table in a join buffer: the per-item read is the fast one here.
    reads_item_arrays: ClassVar[bool] = False

    def __init__(self) -> None:
        self._statements: dict[tuple[int, bool], Prepared] = {}

    def begin(self, conn: Connection, *, write: bool) -> None:
        """Writes run at READ COMMITTED: at InnoDB's default REPEATABLE READ, the
        stream lookup of a new session and the reads of an append lock the gaps
        around the rows they find, so appends to different sessions whose keys are
        neighbours would wait for each other. (A connection the store set up is at
        READ COMMITTED already; one of an engine handed in is asked once.)"""
        if not write:
            return
        info = conn.connection.info  # lives as long as the pooled DBAPI connection
        committed = info.get(_READ_COMMITTED_KEY)
        if committed is None:
            isolation = _ISOLATION[bool(getattr(conn.dialect, "is_mariadb", False))]
            committed = info[_READ_COMMITTED_KEY] = isolation.scalar(conn) == "READ-COMMITTED"
        if not committed:
            _NEXT_READ_COMMITTED.execute(conn)  # for the transaction about to start

    def write_batch(self, conn: Connection, write: StreamWrite) -> int | None:
        """On MariaDB, an append that fits one statement (:data:`AT_COMMIT_BYTES`) to a
        database whose projections read no position takes its positions in the statement
        that commits (see the module docstring): the projections are applied first (their
        events carry position 0), then :meth:`commit_append` writes the stream's row and
        the events, numbers them and commits. Otherwise, and on MySQL, positions first,
        as every backend does (:meth:`Dialect.write_batch`)."""
        projections = write.projections
        if write.confirm or projections.positions_first or not self._at_commit(conn, write):
            return super().write_batch(conn, write)
        rows, recorded = write.rows(0)
        for projector in projections.live:
            projector.apply(conn, recorded)
        self.announce(conn, write.stream_id)
        last_position = self.commit_append(
            conn,
            rows=rows,
            stream=write.stream_values(),
            new_stream=write.head is None,
            generation=projections.generation,
        )
        if last_position is None:
            raise LiveSetChanged()
        return last_position

    def _at_commit(self, conn: Connection, write: StreamWrite) -> bool:
        """Whether ``write`` takes its positions as it commits: MariaDB, and small enough."""
        if not getattr(conn.dialect, "is_mariadb", False):
            return False
        limit = write.statement_limit
        budget = AT_COMMIT_BYTES if limit is None else limit // 2
        size = sum(self.wire_size(enc.payload) for enc in write.events)
        return size <= min(AT_COMMIT_BYTES, budget)

    def commit_append(
        self,
        conn: Connection,
        *,
        rows: Sequence[Mapping[str, Any]],
        stream: Mapping[str, Any],
        new_stream: bool,
        generation: int,
    ) -> int | None:
        """Reserve positions for ``rows`` (events, without ``position``), advance or
        create the stream's row (``stream``: ``sid``, ``new_version``,
        ``new_head_hash``, ``now``), insert the events and commit, all in one statement
        run by the server; return the last position, or None (nothing written, the
        transaction rolled back) if the live projection set is no longer
        ``generation``."""
        key = (len(rows), new_stream)
        statement = self._statements.get(key)
        if statement is None:
            statement = _commit_statement(*key)
            if len(self._statements) < _REMEMBERED_STATEMENTS:
                self._statements[key] = statement
        values: dict[str, Any] = {**stream, "generation": generation}
        for n, row in enumerate(rows):
            for column in _EVENT_VALUES:
                values[f"{column}{n}"] = row[column]
        # The statement commits: a connection lost while it runs leaves the outcome
        # unknown (an append is idempotent by event id, a pop is not retried).
        with translate_errors(self, committing=True):
            try:
                last = statement.first_of_results(conn, values)
            except exc.DBAPIError as error:
                args = getattr(error.orig, "args", ())
                if args[:2] == (_SIGNAL_ERRNO, _LIVE_SET_CHANGED):
                    return None
                raise
        return int(last[0])

    def reserve_positions(self, conn: Connection, count: int) -> tuple[int, int]:
        # LAST_INSERT_ID(expr) comes back in the UPDATE's own reply; the generation of
        # the live projections needs a read (of the row this transaction now holds).
        position = int(_ADVANCE.last_row_id(conn, {"count": count}))
        return position, int(_GENERATION.scalar(conn))

    @contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        # DDL commits implicitly here, so a transaction-scoped lock would not last:
        # take a named lock for the connection and release it explicitly.
        conn.execute(text("SELECT GET_LOCK('convstore_schema', 60)"))
        try:
            yield
        finally:
            if not conn.invalidated:  # a lost connection released it with itself
                conn.execute(text("SELECT RELEASE_LOCK('convstore_schema')"))

    def session_setup(self, timeouts: Timeouts, conn: Any) -> list[str]:
        statements = ["SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"]
        if timeouts.lock_timeout is not None:  # whole seconds, at least 1
            seconds = max(1, math.ceil(timeouts.lock_timeout))
            statements.append(f"SET SESSION innodb_lock_wait_timeout = {seconds}")
        server = conn.driver_connection.get_server_info()
        if timeouts.idle_in_transaction is not None and "MariaDB" in server:
            # MariaDB only (10.3+); MySQL has no idle-in-transaction limit.
            seconds = max(1, math.ceil(timeouts.idle_in_transaction))
            statements.append(f"SET SESSION idle_transaction_timeout = {seconds}")
        return statements

    def max_value_bytes(self, conn: Connection) -> int | None:
        # Text protocol: a statement is one packet, at most max_allowed_packet bytes;
        # leave room for the statement around the payload.
        return int(conn.execute(text("SELECT @@max_allowed_packet")).scalar_one()) - 4096

    def wire_size(self, payload: bytes) -> int:
        # Sent as an escaped literal: each of these bytes takes two.
        return len(payload) + sum(payload.count(c) for c in _ESCAPED)

    limit_name: ClassVar[str] = "the server's max_allowed_packet"

    def classify(self, error: BaseException) -> type[ConvstoreError]:
        args = getattr(error, "args", ())
        errno = args[0] if args and isinstance(args[0], int) else None
        if errno is None:
            return OperationalError
        return _BY_ERRNO.get(errno, PersistenceError)

"""MySQL and MariaDB (asyncmy), through SQLAlchemy.

``UPDATE ... RETURNING`` does not exist here, so the head row is advanced with the
``LAST_INSERT_ID(expr)`` idiom, whose value is private to the connection. The row
lock it takes is held until commit, which makes positions commit-ordered exactly as
on PostgreSQL (see :mod:`eventstore.backends.postgres`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import Connection, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import TypeCompiler

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
from .base import Dialect, Timeouts

_ADVANCE = Prepared(
    text(
        "UPDATE convstore_head SET position = LAST_INSERT_ID(position + :count) WHERE name = 'log'"
    )
)

_GENERATION = Prepared(text("SELECT generation FROM convstore_head WHERE name = 'log'"))

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
        statements = []
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

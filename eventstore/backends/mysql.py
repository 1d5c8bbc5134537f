"""MySQL and MariaDB (asyncmy), through SQLAlchemy.

``UPDATE ... RETURNING`` does not exist here, so the head row is advanced with the
``LAST_INSERT_ID(expr)`` idiom, whose value is private to the connection. The row
lock it takes is held until commit, which makes positions commit-ordered exactly as
on PostgreSQL (see :mod:`eventstore.backends.postgres`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from sqlalchemy import Connection, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import TypeCompiler

from ..errors import (
    IntegrityError,
    OperationalError,
    PersistenceError,
    SchemaError,
    TransientError,
)
from ..prepared import Prepared
from ..schema import Key
from .base import Dialect

_ADVANCE = Prepared(
    text(
        "UPDATE convstore_head SET position = LAST_INSERT_ID(position + :count) WHERE name = 'log'"
    )
)

_GENERATION = Prepared(text("SELECT generation FROM convstore_head WHERE name = 'log'"))

_BY_ERRNO: dict[int, type[PersistenceError]] = {
    1062: IntegrityError,  # ER_DUP_ENTRY
    1586: IntegrityError,  # ER_DUP_ENTRY_WITH_KEY_NAME
    1452: IntegrityError,  # ER_NO_REFERENCED_ROW_2
    1213: TransientError,  # ER_LOCK_DEADLOCK
    1205: TransientError,  # ER_LOCK_WAIT_TIMEOUT
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
            conn.execute(text("SELECT RELEASE_LOCK('convstore_schema')"))

    def classify(self, error: BaseException) -> type[PersistenceError]:
        args = getattr(error, "args", ())
        errno = args[0] if args and isinstance(args[0], int) else None
        if errno is None:
            return OperationalError
        return _BY_ERRNO.get(errno, PersistenceError)

"""PostgreSQL (asyncpg): the production target.

Commit-ordered positions. A ``BIGSERIAL`` hands out numbers when rows are inserted,
not when they commit: writer A takes 10, writer B takes 11 and commits first, and a
reader tailing ``position > 9`` sees 11, moves on, and never sees 10 when A commits.
We avoid that by allocating positions from the one-row table ``convstore_head``
(``UPDATE ... RETURNING``): the row lock is held until commit, so a writer can only
take positions after every earlier writer has committed or rolled back. Positions are
therefore commit-ordered and gapless (a rolled-back writer releases its numbers).

The cost is that appends to *different* streams serialise on that row for the rest
of their transaction (the event insert, the projection update and the commit).
Measured with ``benchmarks/append_throughput.py`` on the 2-core CI machine (one event
per transaction, 4 writer processes): a plain ``BIGSERIAL`` insert does 4,663 events/s,
the same insert plus this ``UPDATE ... RETURNING`` 1,690 (-64%; with one writer 1,851
vs 1,498, -19%); the store's whole append does 1,013 with 4 writers and 805 with one.
Details in ``docs/design.md`` ("Measured").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
    TransientError,
)
from ..prepared import Prepared
from ..schema import Key
from .base import Dialect, Timeouts

# The head advance and the stream's row in one round trip (a data-modifying CTE:
# every part runs even though only the head's is selected).
_ADVANCE_AND_STREAM = Prepared(
    text(
        "WITH head AS (UPDATE convstore_head SET position = position + :count "
        "WHERE name = 'log' RETURNING position, generation), "
        "streamed AS (UPDATE convstore_streams SET version = :new_version, "
        "head_hash = :new_head_hash, updated_at = :now WHERE stream_id = :sid) "
        "SELECT position, generation FROM head"
    )
)

# A bytea value (an event's payload) holds at most 1 GB.
_MAX_FIELD_BYTES = 2**30 - 1

# An arbitrary constant naming convstore's schema-creation lock.
_SCHEMA_LOCK_KEY = 0x636F6E76  # "conv"

_BY_SQLSTATE: dict[str, type[PersistenceError]] = {
    "40001": TransientError,  # serialization_failure
    "40P01": TransientError,  # deadlock_detected
    "55P03": LockTimeoutError,  # lock_not_available: lock_timeout expired
    "42P01": SchemaError,  # undefined_table
    "42703": SchemaError,  # undefined_column
}
_BY_CLASS: dict[str, type[PersistenceError]] = {
    "23": IntegrityError,  # integrity_constraint_violation
    "08": OperationalError,  # connection_exception
    "53": OperationalError,  # insufficient_resources
    "57": OperationalError,  # operator_intervention (e.g. query_canceled)
}


@compiles(Key, "postgresql")
def _compile_key(type_: Key, compiler: TypeCompiler, **kw: object) -> str:
    """Ids compare and sort byte for byte (as on SQLite), whatever the database locale."""
    return f'VARCHAR({type_.length}) COLLATE "C"'


class PostgresDialect(Dialect):
    name: ClassVar[str] = "postgresql"

    def advance_head(
        self,
        conn: Connection,
        count: int,
        stream: Mapping[str, Any] | None = None,
    ) -> tuple[int, int]:
        if stream is None:
            return self.reserve_positions(conn, count)
        row = _ADVANCE_AND_STREAM.first(conn, {"count": count, **stream})
        if row is None:
            raise SchemaError("the head row of convstore_head is missing")
        return int(row[0]), int(row[1])

    @contextmanager
    def schema_lock(self, conn: Connection) -> Iterator[None]:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        yield  # released when the transaction ends

    def session_setup(self, timeouts: Timeouts, conn: Any) -> list[str]:
        statements = []
        if timeouts.lock_timeout is not None:
            statements.append(f"SET lock_timeout = '{round(timeouts.lock_timeout * 1000)}ms'")
        if timeouts.idle_in_transaction is not None:
            ms = round(timeouts.idle_in_transaction * 1000)
            statements.append(f"SET idle_in_transaction_session_timeout = '{ms}ms'")
        return statements

    def max_value_bytes(self, conn: Connection) -> int | None:
        return _MAX_FIELD_BYTES

    limit_name: ClassVar[str] = "PostgreSQL's largest field (1 GB)"

    def classify(self, error: BaseException) -> type[ConvstoreError]:
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if not isinstance(code, str):
            return OperationalError
        return _BY_SQLSTATE.get(code) or _BY_CLASS.get(code[:2]) or PersistenceError

"""Hot-path statements: written with SQLAlchemy Core, run on the DBAPI cursor.

Building and executing a Core statement costs tens of microseconds of Python per call
(coercion, cache key, execution context, result set-up) — more than SQLite takes to
run it, and an append runs seven. A :class:`Prepared` statement is compiled once per
dialect to its SQL string and parameter order, then executed on the DBAPI cursor of
the same connection and transaction. Driver errors are wrapped exactly as SQLAlchemy
wraps them, so :func:`~eventstore.backends.base.translate_errors` classifies them the
same way, and a lost connection is invalidated as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, exc
from sqlalchemy.sql import ClauseElement


class Prepared:
    """One statement, compiled once per dialect, executed with positional parameters."""

    __slots__ = ("_compiled", "_last", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[tuple[type[Any], str], _Compiled] = {}
        self._last: tuple[Any, _Compiled] | None = None  # (dialect, its compiled form)

    def _sql(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        last = self._last
        if last is not None and last[0] is dialect:  # a process mostly uses one engine
            return last[1]
        key = (type(dialect), dialect.paramstyle)
        found = self._compiled.get(key)
        if found is None:
            found = self._compiled[key] = _Compiled(self.statement.compile(dialect=dialect))
        self._last = (dialect, found)
        return found

    def _run(self, conn: Connection, values: Mapping[str, Any] | None) -> Any:
        compiled = self._sql(conn)
        return _call(conn, compiled.sql, compiled.params(values or {}), many=False)

    def execute(self, conn: Connection, values: Mapping[str, Any] | None = None) -> None:
        """Execute with one set of values."""
        self._run(conn, values).close()

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row of values, in one driver call."""
        if len(rows) == 1:
            self.execute(conn, rows[0])
            return
        compiled = self._sql(conn)
        _call(conn, compiled.sql, [compiled.params(row) for row in rows], many=True).close()

    def rowcount(self, conn: Connection, values: Mapping[str, Any] | None = None) -> int:
        """Execute, and return how many rows the statement changed (UPDATE, DELETE)."""
        cursor = self._run(conn, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def last_row_id(self, conn: Connection, values: Mapping[str, Any] | None = None) -> Any:
        """Execute, and return the driver's ``lastrowid`` (MySQL: ``LAST_INSERT_ID()``)."""
        cursor = self._run(conn, values)
        try:
            return cursor.lastrowid
        finally:
            cursor.close()

    def all(self, conn: Connection, values: Mapping[str, Any] | None = None) -> list[Any]:
        cursor = self._run(conn, values)
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def first(self, conn: Connection, values: Mapping[str, Any] | None = None) -> Any | None:
        cursor = self._run(conn, values)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def first_of_results(self, conn: Connection, values: Mapping[str, Any] | None = None) -> Any:
        """The first row of a statement that returns one result set and then a status
        (a MariaDB compound statement ending in a SELECT); reads the status too, so the
        connection is ready for the next statement."""
        cursor = self._run(conn, values)
        try:
            row = cursor.fetchone()
            cursor.nextset()
            return row
        finally:
            cursor.close()

    def scalar(self, conn: Connection, values: Mapping[str, Any] | None = None) -> Any:
        """The first column of the only row."""
        row = self.first(conn, values)
        if row is None:
            raise exc.NoResultFound("statement returned no row")
        return row[0]


class _Compiled:
    """SQL text, parameter order, and values the statement itself fixed (e.g. OFFSET 0)."""

    __slots__ = ("_pick", "defaults", "order", "sql")

    def __init__(self, compiled: Any) -> None:  # a SQLCompiler
        self.sql: str = compiled.string
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup or ()) if compiled.positional else None
        )
        self.defaults: dict[str, Any] = {
            name: bind.effective_value
            for name, bind in compiled.binds.items()
            if isinstance(name, str) and not bind.required
        }
        # The positional parameters out of a mapping, in C (itemgetter of one name
        # returns the value itself, not a tuple).
        self._pick: Callable[[Mapping[str, Any]], Any] | None = None
        if self.order is not None and len(self.order) > 1:
            self._pick = itemgetter(*self.order)

    def params(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.defaults, **values} if self.defaults else values
        if self._pick is not None:
            return self._pick(merged)
        if self.order is None:
            return dict(merged)
        return tuple(merged[name] for name in self.order)


def _call(conn: Connection, sql: str, params: Any, *, many: bool) -> Any:
    dbapi_conn = conn.connection
    dialect = conn.dialect
    cursor = dbapi_conn.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except dialect.loaded_dbapi.Error as error:
        cursor.close()
        lost = dialect.is_disconnect(error, dbapi_conn, cursor)
        if lost:
            # As SQLAlchemy does: every pooled connection as old as this one is replaced
            # at its next checkout (the server that ended one usually ended them all).
            conn.engine.pool._invalidate(dbapi_conn, error)
            conn.invalidate(error)
        raise exc.DBAPIError.instance(
            sql,
            params,
            error,
            dialect.loaded_dbapi.Error,
            dialect=dialect,
            connection_invalidated=lost,
        ) from error
    return cursor

"""Hot-path statements: written with SQLAlchemy Core, run on the DBAPI cursor.

Building and executing a Core statement costs more Python per call (coercion, cache
key, execution context, result set-up) than SQLite takes to run it, and an append runs
several (docs/design.md, "One transaction function, two ways to run it"). A
:class:`Prepared` statement is compiled once per dialect to its SQL string and
parameter order, then executed on the DBAPI cursor of the same connection and
transaction. Driver errors are wrapped exactly as SQLAlchemy wraps them, so
:func:`~eventstore.backends.base.translate_errors` classifies them the same way, and a
lost connection is invalidated as SQLAlchemy would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, bindparam, exc, insert
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

    def execute_values(self, conn: Connection, names: Sequence[str], values: Sequence[Any]) -> None:
        """Execute once; ``values`` are the parameters ``names``, in that order. Where the
        statement takes exactly those in that order (positional paramstyles), they go to
        the driver as they are: no mapping is built."""
        compiled = self._sql(conn)
        if compiled.order == names and not compiled.defaults:
            params: Any = values
        else:
            params = compiled.params(dict(zip(names, values, strict=True)))
        _call(conn, compiled.sql, params, many=False).close()

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


class BulkInsert:
    """Rows into one table, many to a statement: ``INSERT ... VALUES (...), (...), ...``.

    A driver's ``executemany`` runs a one-row statement once per row (SQLite: a reset,
    a binding and a step each); one statement of a hundred rows binds the same values
    but runs once. Rows go in statements of 100, then 10, then 1 row (at most 800
    parameters for eight columns: under every backend's limit, SQLite's older 999
    included). The statements are built and compiled at first use.
    """

    SIZES = (100, 10, 1)

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self._statements: list[tuple[int, Prepared, tuple[str, ...]]] = []

    def _built(self) -> list[tuple[int, Prepared, tuple[str, ...]]]:
        if not self._statements:
            for size in self.SIZES:
                keys = [[f"r{row}_{name}" for name in self.columns] for row in range(size)]
                rows: list[dict[str, Any]] = [
                    {name: bindparam(key) for name, key in zip(self.columns, row, strict=True)}
                    for row in keys
                ]
                names = tuple(key for row in keys for key in row)
                self._statements.append((size, Prepared(insert(self.table).values(rows)), names))
        return self._statements

    def insert(self, conn: Connection, values: Sequence[Any]) -> None:
        """Insert the rows whose values, row after row (each in ``columns`` order),
        are ``values``."""
        width = len(self.columns)
        if len(values) % width:
            raise ValueError(f"{len(values)} values are not rows of {width} columns")
        at = 0
        for size, statement, names in self._built():
            step = size * width
            while len(values) - at >= step:
                statement.execute_values(conn, names, values[at : at + step])
                at += step


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

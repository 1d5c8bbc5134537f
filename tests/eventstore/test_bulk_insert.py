"""BulkInsert: rows many to a statement, on every backend, exactly as given."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Connection, MetaData, String, Table, select

from eventstore.prepared import BulkInsert

from ..conftest import Backend

metadata = MetaData()
# convstore_ prefix: the test fixtures drop it from the server databases between tests.
rows_table = Table(
    "convstore_test_bulk",
    metadata,
    Column("k", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(32), nullable=True),
    Column("n", BigInteger, nullable=True),
)


@pytest.mark.parametrize("count", [0, 1, 9, 100, 234])
async def test_every_row_lands_once_with_its_values(backend: Backend, count: int) -> None:
    """234 rows: two statements of 100, three of 10, four of 1."""
    store = backend.store()
    bulk = BulkInsert(rows_table, ("k", "name", "n"))
    rows = [(k, None if k % 3 else f"name {k}", None if k % 4 else k * 7) for k in range(count)]

    def insert_and_read(conn: Connection) -> list[tuple[Any, ...]]:
        metadata.create_all(conn)
        bulk.insert(conn, [value for row in rows for value in row])
        t = rows_table
        return [tuple(r) for r in conn.execute(select(t.c.k, t.c.name, t.c.n).order_by(t.c.k))]

    assert await store.run(insert_and_read, write=True) == rows


async def test_values_that_are_not_whole_rows_are_refused(backend: Backend) -> None:
    store = backend.store()
    bulk = BulkInsert(rows_table, ("k", "name", "n"))

    def insert(conn: Connection) -> int:
        metadata.create_all(conn)
        with pytest.raises(ValueError, match="not rows of 3 columns"):
            bulk.insert(conn, [1, "a", 2, 3])
        return len(conn.execute(select(rows_table)).all())

    assert await store.run(insert, write=True) == 0

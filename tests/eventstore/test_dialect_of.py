"""eventstore.dialect_of: the dialect object of the database a connection is on, which
says what the database can do (so the layers above ask it, not the database's name)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from eventstore import ConfigurationError, dialect_of
from eventstore.backends import dialect_for

from ..conftest import Backend


async def test_a_connection_gives_its_backends_dialect(backend: Backend) -> None:
    store = backend.store()
    found = await store.run(dialect_of)
    assert type(found) is type(dialect_for(store.dialect_name))
    assert await store.run(dialect_of) is found  # one shared object per kind of database
    # One row per event only where the planner joins events to items by index ranges.
    assert found.reads_item_arrays is (store.dialect_name == "sqlite")


def test_an_unsupported_database_is_refused_by_name() -> None:
    conn: Any = SimpleNamespace(dialect=SimpleNamespace(name="oracle"))
    with pytest.raises(ConfigurationError, match="'oracle'"):
        dialect_of(conn)

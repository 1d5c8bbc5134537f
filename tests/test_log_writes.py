"""The run's recorder of writes to the log's tables (tests/log_writes.py) tells a write
from sessions/ or projections/ apart from eventstore's own, on every backend and
whichever way the statement reaches the driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, text

from eventstore import ItemsAdded, encode_items
from eventstore.prepared import Prepared

from .conftest import Backend
from .log_writes import RECORDER, ROOT

_TOUCH_HEAD = "UPDATE convstore_head SET generation = generation WHERE name = 'log'"

# A module of sessions/ (as far as a traceback can tell) that writes the log behind
# eventstore's back: once with SQLAlchemy, once on the DBAPI cursor (Prepared), once
# on the raw sqlite3 connection.
_PROBE = f"""
def through_sqlalchemy(conn):
    conn.execute(text({_TOUCH_HEAD!r}))

def through_prepared(conn):
    Prepared(text({_TOUCH_HEAD!r})).execute(conn)

def through_the_driver(conn):
    conn.connection.driver_connection.execute({_TOUCH_HEAD!r})
"""


def _probe(package: str) -> dict[str, Callable[[Connection], None]]:
    """The probe's functions, compiled as if they were a module of ``package``."""
    found: dict[str, Any] = {"text": text, "Prepared": Prepared}
    exec(compile(_PROBE, str(ROOT / package / "_log_write_probe.py"), "exec"), found)
    return found


def _caught(before: int) -> set[str]:
    """The modules of the violations recorded since ``before`` (on SQLite a statement
    is seen twice: by SQLAlchemy and by the connection's trace), which are then
    forgotten: they were made on purpose, the run must not fail for them."""
    caught = {v.module for v in RECORDER.violations[before:]}
    del RECORDER.violations[before:]
    return caught


async def test_a_write_from_sessions_or_projections_is_recorded(backend: Backend) -> None:
    store = backend.store()
    await store.append("s", [ItemsAdded(items=encode_items([1]))])
    ways = ["through_sqlalchemy", "through_prepared"]
    if backend.name.startswith("sqlite"):
        ways.append("through_the_driver")
    for package in ("sessions", "projections"):
        probe = _probe(package)
        for way in ways:
            before = len(RECORDER.violations)
            await store.run(probe[way], write=True)
            assert _caught(before) == {f"{package}/_log_write_probe.py"}, (package, way)


async def test_eventstores_own_writes_and_a_tests_tampering_are_not(backend: Backend) -> None:
    before = len(RECORDER.violations)
    store = backend.store()
    await store.append("s", [ItemsAdded(items=encode_items([1]))])
    await store.run(lambda conn: conn.execute(text(_TOUCH_HEAD)), write=True)  # a test's own
    assert _caught(before) == set()

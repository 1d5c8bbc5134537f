"""Any JSON value is stored and read back exactly (same types, key order, unicode,
numbers), or refused with SerializationError before anything is written.

Hypothesis runs in a thread with its own event loop, so one store per backend serves
every example. ``CONVSTORE_LONG_TESTS=1`` raises the examples from 50 to 500.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import SerializationError
from sessions import StoreSession
from sessions.base import HISTORY

from ..conftest import Backend
from ._figures import record
from ._support import sized

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0 nor True), with dict
    keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_examples(backend: Backend, examples: int) -> dict[str, int]:
    loop = asyncio.new_event_loop()
    store = backend.store(projectors=(HISTORY,))
    counts = {"stored": 0, "refused": 0}

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=json_values)
    def round_trip(value: Any) -> None:
        session = StoreSession(f"rt{counts['stored'] + counts['refused']}", store)

        async def go() -> None:
            try:
                await session.add_items([value, {"after": value}])
            except SerializationError:
                counts["refused"] += 1
                assert await session.get_items() == []
                assert await store.stream_info(session.session_id) is None
                return
            counts["stored"] += 1
            back = await session.get_items()
            assert same(back[0], value), (value, back[0])
            assert same(back[1], {"after": value})

        loop.run_until_complete(go())

    try:
        round_trip()
        loop.run_until_complete(store.close())
    finally:
        loop.close()
    return counts


async def test_json_values_round_trip_exactly(backend: Backend) -> None:
    await backend.store(projectors=(HISTORY,)).ensure_tables()
    counts = await asyncio.to_thread(check_examples, backend, sized(50, 500))
    assert counts["stored"] > 0
    record("round_trip", backend=backend.name, **counts)

"""Random calls on encrypted sessions with a TTL agree with a Python list of (item, time).

The clock moves forwards and sometimes backwards (several hosts), so expired items are
not always a prefix: reads must still return exactly the unexpired items, ``limit=n``
the newest n of them, and ``pop_item`` the newest unexpired one. ``purge_expired``
removes the oldest run of expired items and changes nothing visible. At the end the
projections equal a replay of the log.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from projections import verify
from sessions import EncryptedSession, SQLiteSession, StoreSession

from .encryption import KEY, Clock

TTL = 10
items = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=8)}
    ),
    st.integers(-3, 3),
    st.none(),
)
who = st.integers(0, 1)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), who, st.lists(items, max_size=3)),
        st.tuples(st.just("pop"), who),
        st.tuples(st.just("clear"), who),
        st.tuples(st.just("get"), who, st.none() | st.integers(0, 5)),
        st.tuples(st.just("tick"), who, st.sampled_from([-9, -4, 1, 4, 6, 11])),
        st.tuples(st.just("purge"), who),
    ),
    max_size=30,
)

_examples = itertools.count()


def visible(model: list[tuple[Any, float]], now: float) -> list[Any]:
    return [item for item, sealed in model if sealed > now - TTL]


async def check(ops: list[tuple[Any, ...]], db_path: str) -> None:
    n = next(_examples)
    clock = Clock(1_000_000)
    first = SQLiteSession(f"a{n}", db_path)
    second = (
        StoreSession(f"b{n}", first.store)
        if db_path == ":memory:"
        else SQLiteSession(f"b{n}", db_path)
    )
    sessions = [
        EncryptedSession(session=base, encryption_key=KEY, ttl=TTL, clock=clock)
        for base in (first, second)
    ]
    model: tuple[list[tuple[Any, float]], list[tuple[Any, float]]] = ([], [])
    try:
        for op, i, *args in ops:
            session, expected = sessions[i], model[i]
            shown = visible(expected, clock.now)
            if op == "add":
                await session.add_items(args[0])
                expected.extend((item, clock.now) for item in args[0])
            elif op == "pop":
                popped = await session.pop_item()
                assert popped == (shown[-1] if shown else None)
                if shown:
                    newest = max(j for j, (_, t) in enumerate(expected) if t > clock.now - TTL)
                    del expected[newest]
            elif op == "clear":
                await session.clear_session()
                expected.clear()
            elif op == "get":
                limit = args[0]
                want = shown if limit is None else shown[max(0, len(shown) - limit) :]
                assert await session.get_items(limit) == want, (op, i, limit)
            elif op == "tick":
                clock.now += args[0]
            else:
                run = next(
                    (j for j, (_, t) in enumerate(expected) if t > clock.now - TTL),
                    len(expected),
                )
                assert await session.purge_expired() == run
                del expected[:run]
        for session, expected in zip(sessions, model, strict=True):
            assert await session.get_items() == visible(expected, clock.now)
            assert len(await session.underlying_session.get_items()) == len(expected)
        report = await verify(first.store)
        assert report.ok, str(report)
    finally:
        await sessions[1].close()
        await sessions[0].close()


@pytest.fixture(scope="module")
def db_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encrypted-stateful") / "sessions.db"


@pytest.mark.parametrize("where", ["memory", "file"])
@settings(max_examples=60, deadline=None)
@given(ops=operations)
# A clock that went back: the newest item is expired, the one before it is not.
@example(ops=[("add", 0, [1]), ("tick", 0, -9), ("add", 0, [2]), ("tick", 0, 11), ("get", 0, 1)])
@example(ops=[("add", 1, [1]), ("tick", 1, -9), ("add", 1, [2]), ("tick", 1, 11), ("pop", 1)])
def test_random_calls_match_a_list(where: str, ops: list[tuple[Any, ...]], db_file: Path) -> None:
    asyncio.run(check(ops, ":memory:" if where == "memory" else str(db_file)))

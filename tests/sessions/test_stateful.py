"""Random sequences of session calls agree with a Python list, on SQLite (memory, file).

Each example runs its calls in its own event loop (``asyncio.run``) on fresh sessions:
two session ids in one database, so the sequences also check that they keep apart. At
the end, the history each session reads equals the fold of its event log.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import decode_item
from projections.history import fold
from sessions import SQLiteSession, StoreSession

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
    ),
    max_size=25,
)

_examples = itertools.count()


async def check(ops: list[tuple[Any, ...]], db_path: str) -> None:
    n = next(_examples)
    first = SQLiteSession(f"a{n}", db_path)
    # On ":memory:" a second SQLiteSession would be a database of its own.
    second = (
        StoreSession(f"b{n}", first.store)
        if db_path == ":memory:"
        else SQLiteSession(f"b{n}", db_path)
    )
    sessions = (first, second)
    model: tuple[list[Any], list[Any]] = ([], [])
    try:
        for op, i, *args in ops:
            session, expected = sessions[i], model[i]
            if op == "add":
                await session.add_items(args[0])
                expected.extend(args[0])
            elif op == "pop":
                assert await session.pop_item() == (expected.pop() if expected else None)
            elif op == "clear":
                await session.clear_session()
                expected.clear()
            else:
                limit = args[0]
                want = expected if limit is None else expected[max(0, len(expected) - limit) :]
                assert await session.get_items(limit) == want, (op, i, limit)
        for session, expected in zip(sessions, model, strict=True):
            assert await session.get_items() == expected
            log = await session.store.read_stream(session.session_id)
            assert [decode_item(raw) for raw in fold(log).items()] == expected
    finally:
        await second.close()
        await first.close()


@pytest.fixture(scope="module")
def db_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file for every example (each uses session ids of its own)."""
    return tmp_path_factory.mktemp("stateful") / "sessions.db"


@pytest.mark.parametrize("where", ["memory", "file"])
@settings(max_examples=50, deadline=None)
@given(ops=operations)
def test_random_calls_match_a_list(where: str, ops: list[tuple[Any, ...]], db_file: Path) -> None:
    asyncio.run(check(ops, ":memory:" if where == "memory" else str(db_file)))

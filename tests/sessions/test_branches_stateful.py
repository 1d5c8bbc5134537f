"""Random add/pop/clear/branch/switch/delete sequences across several branches agree
with a plain Python model (a list per branch), and the projection equals a replay.

On SQLite (memory and file) every example; the server backends run a few fixed
sequences through the conformance suite (tests/sessions/test_branches.py)."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import BranchError, TurnNotFoundError, decode_item
from projections import fold, rebuild
from sessions import AdvancedSQLiteSession

from ..projections.replay_check import assert_matches_replay

items = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=5)}
    ),
    st.fixed_dictionaries({"type": st.just("function_call"), "name": st.sampled_from("fg")}),
    st.integers(-3, 3),
)
names = st.sampled_from(["a", "b", "c", "d"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(items, min_size=1, max_size=3)),
        st.tuples(st.just("pop")),
        st.tuples(st.just("clear")),
        st.tuples(st.just("branch"), st.integers(-4, 6), names),
        st.tuples(st.just("turn"), st.integers(1, 4), names),
        st.tuples(st.just("switch"), names | st.just("main")),
        st.tuples(st.just("delete"), names, st.booleans()),
        st.tuples(st.just("get"), st.none() | st.integers(0, 4)),
    ),
    max_size=30,
)

_examples = itertools.count()


class Model:
    def __init__(self) -> None:
        self.branches: dict[str, list[Any]] = {"main": []}
        self.current = "main"
        self.used = {"main"}

    @property
    def items(self) -> list[Any]:
        return self.branches[self.current]

    def fork(self, name: str, upto: int) -> None:
        self.branches[name] = self.items[:upto]
        self.used.add(name)
        self.current = name


def user_turn_starts(items: list[Any]) -> list[int]:
    return [
        i for i, item in enumerate(items) if isinstance(item, dict) and item.get("role") == "user"
    ]


async def check(ops: list[tuple[Any, ...]], db_path: str) -> None:
    session = AdvancedSQLiteSession(session_id=f"s{next(_examples)}", db_path=db_path)
    model = Model()
    try:
        for op, *args in ops:
            if op == "add":
                await session.add_items(args[0])
                model.items.extend(args[0])
            elif op == "pop":
                assert await session.pop_item() == (model.items.pop() if model.items else None)
            elif op == "clear":
                await session.clear_session()  # empties main, deletes every other branch
                model.branches = {"main": []}
                model.current = "main"
            elif op == "branch":
                index, name = args
                n = len(model.items)
                valid = -n <= index < n
                if name in model.used:
                    with pytest.raises((BranchError, TurnNotFoundError)):
                        await session.create_branch_from_item(index, name)
                elif not valid:
                    with pytest.raises(TurnNotFoundError):
                        await session.create_branch_from_item(index, name)
                else:
                    await session.create_branch_from_item(index, name)
                    model.fork(name, (index % n) + 1)
            elif op == "turn":
                turn, name = args
                starts = user_turn_starts(model.items)
                if turn > len(starts):
                    with pytest.raises(TurnNotFoundError):
                        await session.create_branch_from_turn(turn, name)
                elif name in model.used:
                    with pytest.raises(BranchError):
                        await session.create_branch_from_turn(turn, name)
                else:
                    await session.create_branch_from_turn(turn, name)
                    model.fork(name, starts[turn - 1])
            elif op == "switch":
                (name,) = args
                if name in model.branches:
                    await session.switch_to_branch(name)
                    model.current = name
                else:
                    with pytest.raises(BranchError):
                        await session.switch_to_branch(name)
            elif op == "delete":
                name, force = args
                if name not in model.branches or (name == model.current and not force):
                    with pytest.raises(BranchError):
                        await session.delete_branch(name, force=force)
                else:
                    await session.delete_branch(name, force=force)
                    del model.branches[name]
                    if model.current == name:
                        model.current = "main"
            else:
                (limit,) = args
                want = (
                    model.items
                    if limit is None
                    else model.items[max(0, len(model.items) - limit) :]
                )
                assert await session.get_items(limit) == (want if limit != 0 else [])
        for name, expected in model.branches.items():
            assert await session.get_items(branch_id=name) == expected, name
        state = fold(await session.store.read_stream(session.session_id))
        for name, expected in model.branches.items():
            assert [decode_item(raw) for raw in state.items(name)] == expected
        assert state.current == model.current
        await assert_matches_replay(session.store)
        # Replayed in one batch (as rebuild and catch-up do), the tables come out the same.
        await rebuild(session.store)
        await assert_matches_replay(session.store)
        for name, expected in model.branches.items():
            assert await session.get_items(branch_id=name) == expected, name
    finally:
        await session.close()


@pytest.fixture(scope="module")
def db_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("branches") / "sessions.db"


@pytest.mark.parametrize("where", ["memory", "file"])
@settings(max_examples=int(os.environ.get("CONVSTORE_EXAMPLES", "60")), deadline=None)
@given(ops=operations)
def test_random_branch_operations_match_lists(
    where: str, ops: list[tuple[Any, ...]], db_file: Path
) -> None:
    asyncio.run(check(ops, ":memory:" if where == "memory" else str(db_file)))

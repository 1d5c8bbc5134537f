"""Property: after any sequence of turns with usage, pops, clears and branch
operations, each branch's usage is exactly the usage recorded for the user messages its
history shows, the session's is everything recorded, and the tables equal a replay."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from agents.run_context import RunContextWrapper
from agents.usage import Usage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import BranchError, TurnNotFoundError, UsageRecorded
from projections import fold
from sessions import AdvancedSQLiteSession

from ..projections.replay_check import assert_matches_replay

operations = st.lists(
    st.one_of(
        st.tuples(st.just("turn"), st.integers(0, 3)),  # model calls in the turn
        st.tuples(st.just("pop"), st.integers(1, 3)),
        st.tuples(st.just("clear"), st.none()),
        st.tuples(st.just("branch"), st.integers(1, 4)),
        st.tuples(st.just("switch"), st.integers(0, 3)),
        st.tuples(st.just("delete"), st.integers(1, 3)),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
async def test_branch_usage_is_the_usage_of_the_turns_it_shows(ops: list[tuple[str, Any]]) -> None:
    session = AdvancedSQLiteSession(session_id="s")
    try:
        for step, (op, arg) in enumerate(ops):
            await apply(session, step, op, arg)
        await check(session)
        await assert_matches_replay(session.store)
    finally:
        await session.close()


async def apply(session: AdvancedSQLiteSession, step: int, op: str, arg: Any) -> None:
    if op == "turn":
        wrapper: RunContextWrapper[None] = RunContextWrapper(context=None)
        await session.add_items([{"role": "user", "content": f"q{step}"}], wrapper=wrapper)
        for call in range(arg):
            wrapper.usage.add(Usage(requests=1, input_tokens=step + 1, output_tokens=call + 1))
            await session.add_items(
                [{"role": "assistant", "content": f"a{step}.{call}"}], wrapper=wrapper
            )
    elif op == "pop":
        for _ in range(arg):
            await session.pop_item()
    elif op == "clear":
        await session.clear_session()
    elif op == "branch":
        try:
            await session.create_branch_from_turn(arg)
        except TurnNotFoundError:
            await session.create_branch_from_item(-1) if await session.get_items(limit=1) else None
    else:
        branches = [b["branch_id"] for b in await session.list_branches()]
        target = branches[arg % len(branches)]
        try:
            if op == "switch":
                await session.switch_to_branch(target)
            else:
                await session.delete_branch(target, force=True)
        except BranchError:  # main cannot be deleted
            pass


async def check(session: AdvancedSQLiteSession) -> None:
    log = await session.store.read_stream("s")
    spent: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    session_total = [0, 0, 0]
    for e in log:
        if isinstance(e.event, UsageRecorded):
            u = e.event
            for figures in (spent[u.anchor_seq] if u.anchor_branch else None, session_total):
                if figures is not None:
                    figures[0] += u.requests
                    figures[1] += u.input_tokens
                    figures[2] += u.output_tokens
    state = fold(log)
    for branch in state.branch_ids():
        shown = [row.seq for row in state.view(branch) if row.kind.is_user and row.seq in spent]
        got = await session.get_session_usage(branch)
        if not shown:
            assert got is None, (branch, got)
            continue
        assert got is not None
        expected = [sum(spent[seq][k] for seq in shown) for k in range(3)]
        assert [got["requests"], got["input_tokens"], got["output_tokens"]] == expected
        assert got["total_turns"] == len(shown)
        turns = await session.get_turn_usage(branch_id=branch)
        numbers = [row.seq for row in state.view(branch) if row.kind.is_user]
        assert [t["user_turn_number"] for t in turns] == [  # type: ignore[index]
            numbers.index(seq) + 1 for seq in shown
        ]
    total = await session.get_session_usage()
    if session_total[0] == 0:
        assert total is None
    else:
        assert total is not None
        assert [total["requests"], total["input_tokens"], total["output_tokens"]] == session_total

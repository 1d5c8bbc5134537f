"""Usage recorded by itself, on every backend: from the Runner's wrapper, per turn,
branch and session, through branches, pops, clears, failures and new processes."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    Runner,
    UserError,
    function_tool,
    output_guardrail,
)
from agents.run_context import RunContextWrapper
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.usage import Usage
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from eventstore import InvalidArgumentError, OperationalError, UsageRecorded
from projections import verify
from sessions import AdvancedSQLiteSession, UsageSession, usage_report

from ..conftest import Backend
from ..projections.replay_check import assert_matches_replay

Opener = Callable[[str], UsageSession]
ROOT = Path(__file__).resolve().parents[2]


def usage(i: int, o: int, *, cached: int = 0, reasoning: int = 0) -> Usage:
    return Usage(
        requests=1,
        input_tokens=i,
        output_tokens=o,
        total_tokens=i + o,
        input_tokens_details=InputTokensDetails(cached_tokens=cached, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
    )


def say(text: str, u: Usage) -> ModelStep:
    return ModelStep(output=[assistant_message(text)], usage=u)


def call_tool(name: str, n: int, u: Usage) -> ModelStep:
    return ModelStep(output=[function_call(name, '{"x": "1"}', call_id=f"c{n}")], usage=u)


@function_tool
def lookup(x: str) -> str:
    """Look x up."""
    return f"found {x}"


@function_tool(failure_error_function=None)
def broken(x: str) -> str:
    """Always fails."""
    raise RuntimeError("the tool broke")


def figures(requests: int, i: int, o: int, turns: int) -> dict[str, int]:
    return {
        "requests": requests,
        "input_tokens": i,
        "output_tokens": o,
        "total_tokens": i + o,
        "total_turns": turns,
    }


def turn(n: int, requests: int, i: int, o: int) -> dict[str, Any]:
    return {"user_turn_number": n, "requests": requests, "input_tokens": i, "output_tokens": o}


def strip(rows: Any) -> list[dict[str, Any]]:
    """get_turn_usage() rows without the detail dicts (checked separately)."""
    keys = ("user_turn_number", "requests", "input_tokens", "output_tokens")
    return [{k: row[k] for k in keys} for row in rows]


async def usage_events(session: UsageSession) -> list[UsageRecorded]:
    return [
        e.event
        for e in await session.store.read_stream(session.session_id)
        if isinstance(e.event, UsageRecorded)
    ]


async def test_a_runner_conversation_with_tools_a_branch_and_pops(
    advanced_sessions: Opener,
) -> None:
    session = advanced_sessions("s")
    model = ScriptedModel(
        [
            call_tool("lookup", 1, usage(10, 1, cached=4, reasoning=1)),
            say("turn 1 answered", usage(20, 2, reasoning=3)),
            say("turn 2 answered", usage(100, 5)),
            call_tool("lookup", 2, usage(7, 1)),
            say("turn 3 answered", usage(8, 1)),
            say("alt turn 3 answered", usage(50, 5)),
            say("turn 4 answered", usage(1, 1)),
        ]
    )
    agent = Agent(name="a", model=model, tools=[lookup])
    first = await Runner.run(agent, "one", session=session)
    await Runner.run(agent, "two", session=session)
    await Runner.run(agent, "three", session=session)

    assert await session.get_session_usage() == figures(5, 145, 10, 3)
    assert await session.get_session_usage("main") == figures(5, 145, 10, 3)
    rows = await session.get_turn_usage()
    assert isinstance(rows, list)
    assert strip(rows) == [turn(1, 2, 30, 3), turn(2, 1, 100, 5), turn(3, 2, 15, 2)]
    assert rows[0]["input_tokens_details"]["cached_tokens"] == 4
    assert rows[0]["output_tokens_details"]["reasoning_tokens"] == 4
    assert rows[0]["total_tokens"] == 33
    one = await session.get_turn_usage(2)
    assert isinstance(one, dict)
    assert (one["requests"], one["input_tokens"], one["total_tokens"]) == (1, 100, 105)
    assert await session.get_turn_usage(9) == {}

    # A branch inherits turns 1-2: they count for it, and once for the session.
    assert await session.create_branch_from_turn(3, "alt") == "alt"
    assert await session.get_session_usage("alt") == figures(3, 130, 8, 2)
    await Runner.run(agent, "alt three", session=session)
    assert await session.get_session_usage() == figures(6, 195, 15, 4)
    assert await session.get_session_usage("main") == figures(5, 145, 10, 3)
    assert await session.get_session_usage("alt") == figures(4, 180, 13, 3)
    assert strip(await session.get_turn_usage()) == [
        turn(1, 2, 30, 3),
        turn(2, 1, 100, 5),
        turn(3, 1, 50, 5),
    ]
    main_three = await session.get_turn_usage(3, branch_id="main")
    assert isinstance(main_three, dict)
    assert main_three["input_tokens"] == 15

    # Popping a turn's user message takes the turn out of the branch's figures; what
    # it spent stays in the session's.
    for _ in range(2):
        await session.pop_item()
    assert await session.get_session_usage("alt") == figures(3, 130, 8, 2)
    assert await session.get_session_usage() == figures(6, 195, 15, 4)
    # Popping an inherited turn leaves the parent's figures alone.
    for _ in range(2):
        await session.pop_item()
    assert await session.get_session_usage("alt") == figures(2, 30, 3, 1)
    assert await session.get_session_usage("main") == figures(5, 145, 10, 3)
    assert await session.get_turn_usage(2) == {}

    stats = await session.get_usage_stats()
    assert stats.branch_id == "alt"
    assert stats.session is not None
    assert (stats.session.requests, stats.session.turns, stats.session.recordings) == (6, 4, 6)
    assert (stats.branch.requests, stats.branch.input_tokens) == (2, 30)
    assert {b: u.total_tokens for b, u in stats.branches.items()} == {"main": 155, "alt": 33}
    assert [(t.turn, t.usage.total_tokens) for t in stats.turns] == [(1, 33)]
    assert stats.session.details["input_tokens_details"]["cached_tokens"] == 4

    # store_run_usage after the automatic recording adds nothing.
    version = (await session.store.stream_info("s")).version  # type: ignore[union-attr]
    await session.store_run_usage(first)
    assert (await session.store.stream_info("s")).version == version  # type: ignore[union-attr]

    await session.switch_to_branch("main")
    await Runner.run(agent, "four", session=session)
    assert await session.get_session_usage("main") == figures(6, 146, 11, 4)
    await session.clear_session()
    assert await session.get_session_usage("main") is None
    assert await session.get_session_usage("alt") is None
    assert await session.get_turn_usage() == []
    assert await session.get_session_usage() == figures(7, 196, 16, 5)
    model.assert_complete()

    await assert_matches_replay(session.store)
    assert (await verify(session.store)).ok


async def test_usage_survives_a_new_process(shared_backend: Backend) -> None:
    target = shared_backend.target
    if shared_backend.name == "sqlite-file":
        session: UsageSession = AdvancedSQLiteSession(session_id="s", db_path=target)
        opener = f"AdvancedSQLiteSession(session_id='s', db_path={target!r})"
    else:
        from sessions import AdvancedSQLAlchemySession

        session = AdvancedSQLAlchemySession("s", db_url=target, create_tables=True)
        opener = f"AdvancedSQLAlchemySession('s', db_url={target!r})"
    model = ScriptedModel([call_tool("lookup", 1, usage(10, 1)), say("done", usage(20, 2))])
    await Runner.run(Agent(name="a", model=model, tools=[lookup]), "one", session=session)
    await session.close()
    script = f"""
import asyncio, json
from sessions import AdvancedSQLiteSession, AdvancedSQLAlchemySession
async def main():
    session = {opener}
    try:
        print(json.dumps([await session.get_session_usage(), await session.get_turn_usage()]))
    finally:
        await session.close()
asyncio.run(main())
"""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdout=PIPE, stderr=PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    total, turns = json.loads(out)
    assert total == figures(2, 30, 3, 1)
    assert strip(turns) == [turn(1, 2, 30, 3)]


async def test_a_run_failing_after_a_model_call_keeps_that_calls_usage(
    advanced_sessions: Opener,
) -> None:
    session = advanced_sessions("s")
    # The model fails on its second call: the first call's usage was written with the
    # tool call and output it produced, in the same append, before the failure.
    model = ScriptedModel([call_tool("lookup", 1, usage(10, 1)), RuntimeError("model down")])
    with pytest.raises(RuntimeError, match="model down"):
        await Runner.run(Agent(name="a", model=model, tools=[lookup]), "one", session=session)
    log = await session.store.read_stream("s")
    recorded = [e for e in log if isinstance(e.event, UsageRecorded)]
    assert [e.event.input_tokens for e in recorded] == [10]
    items_event = log[log.index(recorded[0]) - 1]
    assert items_event.event_type == "ItemsAdded"
    assert items_event.recorded_at == recorded[0].recorded_at  # one append

    # A tool raises after the model call: the Runner saves nothing more, and the
    # session writes that call's usage at its next operation, for the failed turn.
    model = ScriptedModel([call_tool("broken", 2, usage(5, 2))])
    with pytest.raises(UserError):
        await Runner.run(Agent(name="b", model=model, tools=[broken]), "two", session=session)
    assert await session.get_session_usage() == figures(2, 15, 3, 2)
    assert strip(await session.get_turn_usage()) == [turn(1, 1, 10, 1), turn(2, 1, 5, 2)]

    # An output guardrail trips after the call: the next run writes it, each run for
    # its own turn.
    @output_guardrail
    async def refuse(ctx: Any, agent: Any, output: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=True)

    guarded = Agent(
        name="c", model=ScriptedModel([say("no", usage(3, 3))]), output_guardrails=[refuse]
    )
    with pytest.raises(Exception, match="tripwire"):
        await Runner.run(guarded, "three", session=session)
    gc.collect()
    ok = Agent(name="d", model=ScriptedModel([say("yes", usage(1, 1))]))
    await Runner.run(ok, "four", session=session)
    assert strip(await session.get_turn_usage()) == [
        turn(1, 1, 10, 1),
        turn(2, 1, 5, 2),
        turn(3, 1, 3, 3),
        turn(4, 1, 1, 1),
    ]
    assert await session.get_session_usage() == figures(4, 19, 7, 4)
    await assert_matches_replay(session.store)


async def test_store_run_usage_records_only_what_was_not_recorded(
    advanced_sessions: Opener,
) -> None:
    session = advanced_sessions("s")
    # A run made without the session (the SDK's manual form): all of it, for the
    # current turn.
    result = await Runner.run(Agent(name="a", model=ScriptedModel([say("hi", usage(4, 2))])), "x")
    await session.add_items(result.to_input_list())
    await session.store_run_usage(result)
    await session.store_run_usage(result)  # the second call finds nothing new
    assert await session.get_session_usage() == figures(1, 4, 2, 1)
    assert strip(await session.get_turn_usage()) == [turn(1, 1, 4, 2)]

    # A failed run's run_data: its unrecorded usage once, not again at the next write.
    model = ScriptedModel([call_tool("broken", 1, usage(6, 1))])
    try:
        await Runner.run(Agent(name="b", model=model, tools=[broken]), "y", session=session)
    except UserError as error:
        await session.store_run_usage(error.run_data)
    await session.add_items([{"role": "user", "content": "z"}])
    assert await session.get_session_usage() == figures(2, 10, 3, 2)

    version = (await session.store.stream_info("s")).version  # type: ignore[union-attr]
    with pytest.raises(InvalidArgumentError):
        await session.store_run_usage(object())
    assert (await session.store.stream_info("s")).version == version  # type: ignore[union-attr]


async def test_a_failed_write_records_its_usage_once_later(
    advanced_sessions: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = advanced_sessions("s")
    wrapper: RunContextWrapper[None] = RunContextWrapper(context=None)
    await session.get_items(wrapper=wrapper)
    await session.add_items([{"role": "user", "content": "q"}], wrapper=wrapper)
    assert await usage_events(session) == []  # nothing spent yet: nothing recorded
    wrapper.usage.add(usage(10, 1))

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(session.store, "append_decided", fail)
        with pytest.raises(OperationalError):
            await session.add_items([{"role": "assistant", "content": "a"}], wrapper=wrapper)
    assert await session.get_items() == [{"role": "user", "content": "q"}]
    await session.add_items([{"role": "assistant", "content": "a"}], wrapper=wrapper)
    await session.add_items([{"role": "assistant", "content": "b"}], wrapper=wrapper)
    assert [e.input_tokens for e in await usage_events(session)] == [10]
    assert await session.get_session_usage() == figures(1, 10, 1, 1)


async def test_usage_of_a_turn_removed_before_it_was_written_counts_for_the_session(
    advanced_sessions: Opener,
) -> None:
    session, other = advanced_sessions("s"), advanced_sessions("s")
    wrapper: RunContextWrapper[None] = RunContextWrapper(context=None)
    await session.add_items([{"role": "user", "content": "q"}], wrapper=wrapper)
    wrapper.usage.add(usage(10, 1))
    await other.pop_item()  # another process removes the turn the run answers
    assert await session.get_session_usage() == figures(1, 10, 1, 0)
    assert await session.get_session_usage("main") is None
    (event,) = await usage_events(session)
    assert event.anchor_branch is None
    await assert_matches_replay(session.store)


async def test_a_run_first_seen_midway_counts_from_there(advanced_sessions: Opener) -> None:
    # A run resumed from a saved RunState: what it spent before was recorded by the
    # session that saw it then.
    session = advanced_sessions("s")
    wrapper: RunContextWrapper[None] = RunContextWrapper(context=None, usage=usage(50, 5))
    await session.add_items([{"role": "user", "content": "q"}], wrapper=wrapper)
    wrapper.usage.add(usage(1, 1))
    await session.add_items([{"role": "assistant", "content": "a"}], wrapper=wrapper)
    assert await session.get_session_usage() == figures(1, 1, 1, 1)


async def test_usage_report(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    model = ScriptedModel([say("a", usage(3, 1)), say("b", usage(5, 1))])
    agent = Agent(name="a", model=model)
    await Runner.run(agent, "one", session=session)
    await Runner.run(agent, "two", session=session)
    report = await usage_report(session.store, "s")
    assert report.branch_id == "main"
    assert [(t.turn, t.usage.input_tokens) for t in report.turns] == [(1, 3), (2, 5)]
    assert report.to_dict()["session"]["total_tokens"] == 10
    with pytest.raises(InvalidArgumentError):
        await usage_report(session.store, "nobody")
    with pytest.raises(InvalidArgumentError):
        await usage_report(session.store, "s", branch="nope")


async def test_closing_writes_what_a_failed_run_left(advanced_sessions: Opener) -> None:
    reader = advanced_sessions("s")
    session = advanced_sessions("s")
    model = ScriptedModel([call_tool("broken", 1, usage(8, 2))])
    with pytest.raises(UserError):
        await Runner.run(Agent(name="a", model=model, tools=[broken]), "one", session=session)
    assert await usage_events(reader) == []
    session.close()  # not awaited, as the SDK's close() is called
    await session.close()
    assert await reader.get_session_usage() == figures(1, 8, 2, 1)
    assert strip(await reader.get_turn_usage()) == [turn(1, 1, 8, 2)]


async def test_usage_is_added_to_a_database_that_has_a_log_already(shared_backend: Backend) -> None:
    from sessions import AdvancedSQLAlchemySession, SQLAlchemySession, SQLiteSession

    target = shared_backend.target
    plain: Any
    if shared_backend.name == "sqlite-file":
        plain = SQLiteSession("s", target)
    else:
        plain = SQLAlchemySession("s", db_url=target, create_tables=True)
    await plain.add_items([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    await plain.pop_item()
    advanced: UsageSession
    if shared_backend.name == "sqlite-file":
        advanced = AdvancedSQLiteSession(session_id="s", db_path=target)
    else:
        advanced = AdvancedSQLAlchemySession("s", db_url=target, create_tables=True)
    try:
        assert await advanced.get_session_usage() is None  # caught up from the log
        model = ScriptedModel([say("b", usage(2, 1))])
        await Runner.run(Agent(name="a", model=model), "again", session=advanced)
        await plain.pop_item()  # a plain session's pop keeps the usage projection too
        await plain.pop_item()
        assert await advanced.get_session_usage("main") is None
        assert await advanced.get_session_usage() == figures(1, 2, 1, 1)
        await assert_matches_replay(advanced.store)
    finally:
        await advanced.close()
        await plain.close()


async def test_an_initialised_database_takes_advanced_sessions_without_create_tables(
    shared_backend: Backend,
) -> None:
    from sessions import AdvancedSQLAlchemySession
    from sessions.admin import init_database

    await init_database(shared_backend.target)
    url = shared_backend.target
    if shared_backend.name == "sqlite-file":
        url = f"sqlite:///{url}"
    session = AdvancedSQLAlchemySession("s", db_url=url)  # create_tables=False
    try:
        model = ScriptedModel([say("a", usage(3, 1))])
        await Runner.run(Agent(name="a", model=model), "one", session=session)
        assert await session.get_session_usage() == figures(1, 3, 1, 1)
    finally:
        await session.close()

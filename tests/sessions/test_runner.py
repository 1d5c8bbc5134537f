"""The SDK's Runner on convstore sessions, every backend: the model sees the history."""

from __future__ import annotations

from typing import Any

from agents import Agent, RunConfig, Runner
from agents.memory import SessionSettings
from agents.testing import ScriptedModel, assistant_message

from sessions import StoreSession

from .conftest import Sessions


def scripted(*replies: str) -> ScriptedModel:
    return ScriptedModel(
        [[assistant_message(text, item_id=f"reply-{n}")] for n, text in enumerate(replies)]
    )


def agent_on(model: ScriptedModel) -> Agent[Any]:
    return Agent(name="Notes", instructions="Help with notes.", model=model)


def said(items: list[Any]) -> list[tuple[str, str]]:
    """``(role, text)`` of each message item, whatever its content's shape."""
    out = []
    for item in items:
        content = item["content"]
        text = content if isinstance(content, str) else "".join(c["text"] for c in content)
        out.append((item["role"], text))
    return out


async def test_turns_see_the_earlier_turns(session: StoreSession) -> None:
    model = scripted("one", "two", "three")
    agent = agent_on(model)
    for text in ("hello", "again", "third"):
        result = await Runner.run(agent, text, session=session)
    assert result.final_output == "three"

    first, second, third = (call.input for call in model.calls)
    assert said(first) == [("user", "hello")]
    assert said(second) == [("user", "hello"), ("assistant", "one"), ("user", "again")]
    assert said(third) == [*said(second), ("assistant", "two"), ("user", "third")]
    history = await session.get_items()
    assert len(history) == 6
    assert history[:5] == third, "the model received exactly what the session stored"
    assert said(history[5:]) == [("assistant", "three")]


async def test_streamed_run_persists_its_turn(session: StoreSession) -> None:
    model = scripted("one", "two")
    agent = agent_on(model)
    await Runner.run(agent, "hello", session=session)
    result = Runner.run_streamed(agent, "streamed", session=session)
    events = [event async for event in result.stream_events()]
    assert events
    assert result.final_output == "two"
    call = model.calls[1]
    assert call.streamed
    assert said(call.input) == [("user", "hello"), ("assistant", "one"), ("user", "streamed")]
    assert said(await session.get_items()) == [
        ("user", "hello"),
        ("assistant", "one"),
        ("user", "streamed"),
        ("assistant", "two"),
    ]


async def test_run_config_limit_bounds_what_the_model_sees(session: StoreSession) -> None:
    model = scripted("one", "two", "three")
    agent = agent_on(model)
    await Runner.run(agent, "hello", session=session)
    await Runner.run(agent, "again", session=session)
    before = await session.get_items()
    config = RunConfig(session_settings=SessionSettings(limit=2))
    await Runner.run(agent, "third", session=session, run_config=config)
    assert model.calls[2].input == [*before[-2:], {"content": "third", "role": "user"}]
    assert said(model.calls[2].input) == [
        ("user", "again"),
        ("assistant", "two"),
        ("user", "third"),
    ]
    assert len(await session.get_items()) == 6, "the limit bounds the reading, not the history"


async def test_session_limit_and_its_override(sessions: Sessions) -> None:
    session = sessions.open("s", session_settings=SessionSettings(limit=1))
    model = scripted("one", "two", "three")
    agent = agent_on(model)
    await Runner.run(agent, "hello", session=session)
    await Runner.run(agent, "again", session=session)
    assert said(model.calls[1].input) == [("assistant", "one"), ("user", "again")]
    config = RunConfig(session_settings=SessionSettings(limit=3))
    await Runner.run(agent, "third", session=session, run_config=config)
    assert said(model.calls[2].input) == [
        ("assistant", "one"),
        ("user", "again"),
        ("assistant", "two"),
        ("user", "third"),
    ]


async def test_a_popped_turn_is_forgotten(session: StoreSession) -> None:
    model = scripted("one", "wrong", "right")
    agent = agent_on(model)
    await Runner.run(agent, "hello", session=session)
    await Runner.run(agent, "typo", session=session)
    assert said([await session.pop_item()]) == [("assistant", "wrong")]
    assert said([await session.pop_item()]) == [("user", "typo")]
    await Runner.run(agent, "fixed", session=session)
    assert said(model.calls[2].input) == [
        ("user", "hello"),
        ("assistant", "one"),
        ("user", "fixed"),
    ]


async def test_runs_on_two_sessions_keep_apart(sessions: Sessions) -> None:
    alice, bob = sessions.open("alice"), sessions.open("bob")
    model = scripted("hi alice", "hi bob", "bye alice")
    agent = agent_on(model)
    await Runner.run(agent, "I am alice", session=alice)
    await Runner.run(agent, "I am bob", session=bob)
    await Runner.run(agent, "bye", session=alice)
    assert said(model.calls[1].input) == [("user", "I am bob")]
    assert said(model.calls[2].input) == [
        ("user", "I am alice"),
        ("assistant", "hi alice"),
        ("user", "bye"),
    ]
    assert said(await bob.get_items()) == [("user", "I am bob"), ("assistant", "hi bob")]

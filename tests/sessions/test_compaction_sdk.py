"""Compaction with the Agents SDK, offline: its compaction session over ours is one event;
an Agent (ScriptedModel), the Responses compact endpoint (a fake client) and the
automatic wrapper as summarisers."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from agents import Agent, Runner
from agents.memory.openai_responses_compaction_session import OpenAIResponsesCompactionSession
from agents.testing import ScriptedModel, assistant_message

from eventstore import HistoryCompacted, InvalidArgumentError, SessionCleared
from sessions import CompactingSession, EncryptedSession, ResponsesCompactor, StoreSession
from sessions.summarizers import SUMMARY_PREFIX

from .conftest import Sessions
from .encryption import MARKER, encrypted
from .test_compaction import consistent, fill, turn, version_of

COMPACTED = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "c"}]}]


class FakeResponses:
    """``client.responses.compact`` as the SDK's own tests fake it."""

    def __init__(self, output: list[Any]) -> None:
        self.output = output
        self.calls: list[dict[str, Any]] = []

    async def compact(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        usage = SimpleNamespace(
            input_tokens=40, output_tokens=8, total_tokens=48, input_tokens_details=None
        )
        return SimpleNamespace(output=list(self.output), usage=usage)


def fake_client(output: list[Any] = COMPACTED) -> Any:
    return SimpleNamespace(responses=FakeResponses(output))


def test_the_pinned_sdk_probes_our_hooks() -> None:
    """If a new SDK stops asking for these hooks, its compaction falls back to
    clear_session() + add_items() (two events, not atomic): fail loudly then."""
    source = inspect.getsource(OpenAIResponsesCompactionSession)
    for hook in ("_atomic_replace_items", "_get_compaction_snapshot", "_read_compaction_items"):
        assert hook in source, f"the SDK no longer probes {hook}: update sessions/compaction.py"
    for cls in (StoreSession, EncryptedSession):
        assert callable(getattr(cls, "_atomic_replace_items", None))
        assert callable(getattr(cls, "_get_compaction_snapshot", None))
    assert callable(getattr(EncryptedSession, "_read_compaction_items", None))


async def sdk_compaction_events(session: Any, wrapped: Any) -> list[Any]:
    before = await version_of(session)
    client = fake_client()
    compaction = OpenAIResponsesCompactionSession("s", wrapped, client=client)
    await compaction.run_compaction({"force": True})
    assert len(client.responses.calls) == 1
    log = await session.store.read_stream(session.session_id)
    return [r.event for r in log[before:]]


async def test_sdk_compaction_over_our_session_is_one_event(session: StoreSession) -> None:
    await fill(session, 2)
    events = await sdk_compaction_events(session, session)
    assert [type(e) for e in events] == [HistoryCompacted], "not one atomic event"
    assert not any(isinstance(e, SessionCleared) for e in events)
    assert await session.get_items() == COMPACTED
    await consistent(session)


async def test_sdk_compaction_over_an_encrypted_session_is_one_sealed_event(
    sessions: Sessions,
) -> None:
    session = encrypted(sessions)
    await session.add_items([{"role": "user", "content": MARKER}])
    events = await sdk_compaction_events(session, session)
    assert [type(e) for e in events] == [HistoryCompacted]
    assert await session.get_items() == COMPACTED
    payload = b"".join(r.payload for r in await session.store.read_stream("s"))
    assert b'"text":"c"' not in payload
    assert MARKER.encode() not in payload


async def test_snapshot_hook_replaces_a_suffix_or_refuses(sessions: Sessions) -> None:
    session, other = sessions.open("s"), sessions.open("s")
    await fill(session, 2)
    snapshot = await session._get_compaction_snapshot(4)
    assert snapshot.items == turn(1)
    assert snapshot.complete is False
    await other.add_items([{"role": "user", "content": "newer"}])
    assert await snapshot.replace_suffix(0, COMPACTED) is False  # the suffix moved on
    snapshot = await session._get_compaction_snapshot(20)
    assert snapshot.complete is True
    assert await snapshot.replace_suffix(4, COMPACTED) is True
    assert await session.get_items() == [*turn(0), *COMPACTED]
    await consistent(session)


async def test_an_agent_summarises_under_the_runner(session: StoreSession) -> None:
    await fill(session, 3)
    model = ScriptedModel([[assistant_message("the user asked three questions")]])
    agent = Agent(name="Summariser", instructions="Summarise.", model=model)
    result = await session.compact(summarize=agent, keep_last_turns=1)
    assert result is not None
    assert result.replaced == 8
    assert model.calls[0].input[:8] == [*turn(0), *turn(1)]
    items = await session.get_items()
    assert items[0]["content"] == SUMMARY_PREFIX + "the user asked three questions"
    usage = [r.event for r in await session.store.read_stream("s")][-1]
    assert getattr(usage, "requests", 0) == 1  # the run's usage, recorded
    await consistent(session)


async def test_the_responses_compact_endpoint_summarises(session: StoreSession) -> None:
    await fill(session, 2)
    client = fake_client()
    await session.compact(summarize=ResponsesCompactor(client, "gpt-4.1"), keep_last_turns=1)
    assert client.responses.calls[0]["input"] == turn(0)
    assert await session.get_items() == [*COMPACTED, *turn(1)]
    usage = (await session.store.read_stream("s"))[-1].event
    assert (getattr(usage, "requests", 0), getattr(usage, "total_tokens", 0)) == (1, 48)


async def test_compacting_session_compacts_past_its_bound(session: StoreSession) -> None:
    async def short(items: list[Any]) -> str:
        return f"{len(items)} items"

    with pytest.raises(InvalidArgumentError):
        CompactingSession(session, summarize=short)
    auto = CompactingSession(session, summarize=short, max_items=10)
    for n in range(6):
        await auto.add_items(turn(n))
        assert len(await auto.get_items()) <= 10
    assert auto.last_compaction is not None
    by_tokens = CompactingSession(session, summarize=short, max_tokens=60, keep_last_turns=1)
    await by_tokens.add_items(turn(9))
    items = await session.get_items()
    assert items[0]["content"].startswith(SUMMARY_PREFIX)
    assert items[1:] == turn(9)
    await consistent(session)


async def test_runner_with_a_compacting_session(session: StoreSession) -> None:
    async def short(items: list[Any]) -> str:
        return "earlier turns"

    model = ScriptedModel([[assistant_message(t)] for t in "ABCD"])
    agent = Agent(name="A", instructions="Answer.", model=model)
    auto = CompactingSession(session, summarize=short, max_items=3, keep_last_turns=1)
    for question in ("one", "two", "three"):
        await Runner.run(agent, question, session=auto)
    last_input = model.calls[-1].input
    assert last_input[0] == {"role": "system", "content": SUMMARY_PREFIX + "earlier turns"}
    assert last_input[-1]["content"] == "three"

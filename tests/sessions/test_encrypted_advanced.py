"""EncryptedSession over the Advanced sessions, every backend: branches and turns work
on ciphertext (user messages keep a readable mark), content is searched in process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from agents import Agent, Runner
from agents.testing import ScriptedModel, assistant_message

from eventstore import ConvstoreError, TurnNotFoundError
from sessions import (
    AdvancedSQLAlchemySession,
    AdvancedSQLiteSession,
    BranchingSession,
    EncryptedSession,
)

from ..conftest import Backend
from .encryption import KEY, MARKER, raw_items, stored_bytes

Opener = Callable[[str], EncryptedSession]


@pytest.fixture
async def advanced(backend: Backend) -> AsyncIterator[Opener]:
    """Encrypted Advanced sessions on the ``backend`` database, closed at the end."""
    opened: list[EncryptedSession] = []

    def open_one(session_id: str = "s") -> EncryptedSession:
        base: BranchingSession
        if backend.name.startswith("sqlite"):
            base = AdvancedSQLiteSession(session_id=session_id, db_path=backend.target)
        else:
            base = AdvancedSQLAlchemySession(session_id, db_url=backend.target, create_tables=True)
        session = EncryptedSession(session=base, encryption_key=KEY, ttl=3600)
        opened.append(session)
        return session

    yield open_one
    for session in reversed(opened):
        await session.close()


def turn(n: int, word: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"{MARKER} {word} question"},
        {"role": "assistant", "content": f"answer {n}"},
    ]


async def test_turns_and_search_on_ciphertext(advanced: Opener) -> None:
    session = advanced("s")
    for n, word in enumerate(["first", "second", "third"], start=1):
        await session.add_items(turn(n, word))
    turns = await session.get_conversation_turns()
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert turns[1]["full_content"] == f"{MARKER} second question"
    assert turns[1]["can_branch"] is True
    found = await session.find_turns_by_content("SECOND")
    assert [t["turn"] for t in found] == [2]
    assert await session.find_turns_by_content("nowhere") == []
    assert await session.get_items(turns=1) == turn(3, "third")
    assert await session.get_items(turns=2, limit=3) == turn(2, "second")[1:] + turn(3, "third")
    assert MARKER.encode() not in await stored_bytes(session.store)


async def test_branches_on_ciphertext(advanced: Opener, backend: Backend) -> None:
    session = advanced("s")
    for n, word in enumerate(["first", "second", "third"], start=1):
        await session.add_items(turn(n, word))
    branch = await session.create_branch_from_turn(2, "retry")
    assert branch == "retry"
    assert await session.get_items() == turn(1, "first")  # the branch is current
    await session.add_items(turn(2, "other"))
    assert await session.get_items(branch_id="main") == [
        *turn(1, "first"),
        *turn(2, "second"),
        *turn(3, "third"),
    ]
    names = {b["branch_id"] for b in await session.list_branches()}
    assert names == {"main", "retry"}
    if backend.name != "sqlite-memory":  # (there, a new object is a new database)
        again = advanced("s")  # a new object starts on the branch last switched to
        assert await again.get_items() == [*turn(1, "first"), *turn(2, "other")]
        assert await again.pop_item() == turn(2, "other")[1]
        await again.add_items(turn(2, "other")[1:])
    await session.switch_to_branch("main")
    from_content = await session.create_branch_from_content("third")
    assert await session.get_items() == [*turn(1, "first"), *turn(2, "second")]
    await session.switch_to_branch("main")
    assert len(await session.get_items()) == 6
    assert from_content in {b["branch_id"] for b in await session.list_branches()}
    with pytest.raises(TurnNotFoundError):
        await session.create_branch_from_content("nowhere")
    stored = await raw_items(session.underlying_session)
    assert [item.get("role") for item in stored] == ["user", None] * 3


async def test_what_needs_content_is_not_offered_unencrypted(
    advanced: Opener, backend: Backend
) -> None:
    session = advanced("s")
    with pytest.raises(AttributeError, match="get_tool_usage"):
        session.get_tool_usage  # noqa: B018 (the projection sees no tool names)
    if backend.name == "sqlite-memory":
        from sessions import SQLiteSession

        async with EncryptedSession(session=SQLiteSession("p"), encryption_key=KEY) as plain:
            with pytest.raises(TypeError, match="Advanced session") as refused:
                await plain.get_items(branch_id="main")
            assert isinstance(refused.value, ConvstoreError)
            with pytest.raises(TypeError, match="Advanced session") as refused:
                await plain.get_conversation_turns()
            assert isinstance(refused.value, ConvstoreError)
            with pytest.raises(AttributeError):
                plain.create_branch_from_turn  # noqa: B018


async def test_runner_branches_mid_conversation(advanced: Opener) -> None:
    model = ScriptedModel(
        [[assistant_message(text, item_id=f"r{n}")] for n, text in enumerate("ABCD")]
    )
    agent = Agent(name="Notes", instructions="Help with notes.", model=model)
    session = advanced("s")
    await Runner.run(agent, f"one {MARKER}", session=session)
    await Runner.run(agent, "two", session=session)
    await session.create_branch_from_turn(2, "alt")
    result = await Runner.run(agent, "two again", session=session)
    assert result.final_output == "C"
    texts = [c.input[-1]["content"] for c in model.calls]
    assert texts == [f"one {MARKER}", "two", "two again"]
    assert len(model.calls[2].input) == 3  # turn 1 (2 items) and the new message
    assert [t["turn"] for t in await session.get_conversation_turns()] == [1, 2]
    assert MARKER.encode() not in await stored_bytes(session.store)

"""Every call form of the Agents SDK's Sessions guide works as written.

The guide imports from ``agents.sessions``; convstore makes that name resolve to its
``sessions`` package. The model is scripted (offline); everything else is verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from agents import Agent, Runner
from agents.testing import ScriptedModel, assistant_message

import sessions


def scripted(*replies: str) -> ScriptedModel:
    return ScriptedModel([[assistant_message(text)] for text in replies])


def test_agents_sessions_is_convstore() -> None:
    from agents.sessions import SQLAlchemySession, SQLiteSession

    assert SQLiteSession is sessions.SQLiteSession
    assert SQLAlchemySession is sessions.SQLAlchemySession


async def test_basic_sqlite_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from agents.sessions import SQLiteSession

    agent = Agent(
        name="NotesAgent", instructions="Help with notes.", model=scripted("ok", "1 note")
    )

    # In-memory (lost on restart)
    session = SQLiteSession("user_123")
    await session.close()

    # File-based (persistent)
    session = SQLiteSession("user_123", "conversations.db")

    # Run with session
    result = await Runner.run(agent, "Create a note", session=session)

    # Continue conversation (history preserved)
    result = await Runner.run(agent, "Now list my notes", session=session)
    assert result.final_output == "1 note"
    assert len(await session.get_items()) == 4
    await session.close()
    assert (tmp_path / "conversations.db").exists()


async def test_session_per_user_and_operations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    from agents.sessions import SQLiteSession

    agent = Agent(name="NotesAgent", instructions="...", model=scripted("hi alice", "hi bob"))

    async def chat(user_id: str, message: str) -> str:
        # Each user gets own session
        session = SQLiteSession(user_id, "conversations.db")
        result = await Runner.run(agent, message, session=session)
        await session.close()
        return str(result.final_output)

    assert await chat("alice", "Hello") == "hi alice"
    assert await chat("bob", "Hello") == "hi bob"

    session = SQLiteSession("alice", "conversations.db")
    # Get conversation history
    items = await session.get_items()
    assert [i.get("role") for i in items] == ["user", "assistant"]
    # Add items manually
    await session.add_items([{"role": "user", "content": "Hello"}])
    # Remove last item (for corrections)
    removed = await session.pop_item()
    assert removed == {"role": "user", "content": "Hello"}
    # Clear entire session
    await session.clear_session()
    assert await session.get_items() == []
    await session.close()


async def test_sqlalchemy_forms_on_sqlite_urls(tmp_path: Path) -> None:
    from agents.sessions import SQLAlchemySession
    from sqlalchemy.ext.asyncio import create_async_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}"
    # From URL
    session = SQLAlchemySession(session_id="user_123", db_url=url, create_tables=True)
    await session.add_items([{"role": "user", "content": "one"}])
    await session.close()

    # From existing engine
    engine = create_async_engine(url)
    session = SQLAlchemySession(session_id="user_123", engine=engine)
    assert await session.get_items() == [{"role": "user", "content": "one"}]
    await session.close()
    await engine.dispose()

    session = SQLAlchemySession.from_url("user_123", url=url)
    assert len(await session.get_items()) == 1
    await session.close()


@dataclass
class UserContext:
    user_id: str
    user_name: str


async def test_session_with_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from agents.sessions import SQLiteSession

    model = scripted("Sure, Ada.")
    agent = Agent(
        name="NotesAgent",
        instructions=lambda ctx, _: f"Help {ctx.context.user_name} with notes.",
        model=model,
    )

    async def chat(user_id: str, user_name: str, message: str) -> str:
        context = UserContext(user_id=user_id, user_name=user_name)
        session = SQLiteSession(user_id, "conversations.db")

        result = await Runner.run(agent, message, context=context, session=session)
        await session.close()
        return str(result.final_output)

    assert await chat("u1", "Ada", "Take a note") == "Sure, Ada."
    assert model.last_call is not None
    assert model.last_call.system_instructions == "Help Ada with notes."

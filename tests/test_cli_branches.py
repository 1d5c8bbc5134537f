"""The convstore command's branch and encryption commands (tree, history --branch,
shred) on SQLite files, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from eventstore import EventStore, KeyShreddedError
from sessions import BranchingSession, EncryptedSession, StoreSession
from sessions.base import HISTORY

from .conftest import Backend
from .test_cli import run

KEY = "a passphrase long enough for the test"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def branched(store: EventStore) -> None:
    session = BranchingSession("trip", store)
    for text in ("Plan a trip to Lisbon", "Cheaper hotels please", "Add a museum day"):
        await session.add_items([user(text), {"role": "assistant", "content": "ok"}])
    await session.create_branch_from_turn(2, "budget")
    await session.add_items([user("Hostels only")])
    await session.create_branch_from_turn(2, "hostels")
    await session.switch_to_branch("main")
    await session.create_branch_from_turn(3, "no-museum")
    sealed = EncryptedSession(session=StoreSession("secret", store), encryption_key=KEY)
    await sealed.add_items([user("my account is 12-345")])
    await StoreSession("plain", store).add_items([user("hello")])


@pytest.fixture
async def db(shared_backend: Backend) -> str:
    await branched(shared_backend.store(projectors=(HISTORY,)))
    return shared_backend.target


def test_tree_draws_branches_with_fork_points(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "tree", "trip")
    assert code == 0
    assert out.splitlines() == [
        "main  6 item(s), 3 turn(s)",
        "├── budget  3 item(s), 2 turn(s)  after turn 1 of main: 'Plan a trip to Lisbon'",
        "│   └── hostels  2 item(s), 1 turn(s)  after turn 1 of budget: 'Plan a trip to Lisbon'",
        "└── no-museum (current)  4 item(s), 2 turn(s)  after turn 2 of main: "
        "'Cheaper hotels please'",
    ]
    code, out, _ = run(capsys, "--json", db, "tree", "trip")
    nodes = json.loads(out)
    assert [(n["branch_id"], n["parent_branch_id"], n["depth"]) for n in nodes] == [
        ("main", None, 0),
        ("budget", "main", 1),
        ("hostels", "budget", 2),
        ("no-museum", "main", 1),
    ]
    code, _, err = run(capsys, db, "tree", "nobody")
    assert code == 2
    assert err.strip() == "convstore: no session 'nobody' in this database"


def test_history_of_a_branch(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", db, "history", "trip", "--branch", "budget")
    assert code == 0
    assert [i["content"] for i in json.loads(out)] == [
        "Plan a trip to Lisbon",
        "ok",
        "Hostels only",
    ]
    code, _, err = run(capsys, db, "history", "trip", "--branch", "nope")
    assert code == 2
    assert "no branch 'nope'" in err


def test_shred_makes_an_encrypted_session_unreadable(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, db, "shred", "secret", "--yes")
    assert code == 0
    assert "cannot be read" in out
    code, out, _ = run(capsys, "--json", db, "shred", "secret", "--yes")
    assert json.loads(out) == {"session": "secret", "shredded": False}  # already gone
    code, _, err = run(capsys, db, "shred", "plain", "--yes")
    assert code == 2
    assert "not encrypted" in err
    code, _, err = run(capsys, db, "shred", "nobody", "--yes")
    assert code == 2
    code, _, _ = run(capsys, db, "audit")
    assert code == 0, "the chain covers ciphertext: shredding changes no event"


async def test_shredded_items_stay_unreadable(shared_backend: Backend) -> None:
    store = shared_backend.store(projectors=(HISTORY,))
    await branched(store)
    from sessions import shred_session

    assert await shred_session(store, "secret")
    sealed = EncryptedSession(session=StoreSession("secret", store), encryption_key=KEY)
    with pytest.raises(KeyShreddedError):
        await sealed.get_items()


async def runner_conversation(target: str, backend: Backend) -> None:
    """Two Runner turns with usage, a branch, and a third turn on the branch."""
    from agents import Agent, Runner
    from agents.testing import ModelStep, ScriptedModel, assistant_message
    from agents.usage import Usage

    from sessions import AdvancedSQLAlchemySession, AdvancedSQLiteSession

    def step(text: str, i: int, o: int) -> ModelStep:
        usage = Usage(requests=1, input_tokens=i, output_tokens=o, total_tokens=i + o)
        return ModelStep(output=[assistant_message(text)], usage=usage)

    model = ScriptedModel([step("hi", 10, 2), step("noted", 30, 5), step("other", 25, 4)])
    agent = Agent(name="Notes", instructions="Help with notes.", model=model)
    session: Any = (
        AdvancedSQLiteSession(session_id="talk", db_path=target)
        if backend.name.startswith("sqlite")
        else AdvancedSQLAlchemySession("talk", db_url=target, create_tables=True)
    )
    async with session:
        await Runner.run(agent, "hello", session=session)
        await Runner.run(agent, "note milk", session=session)
        await session.create_branch_from_turn(2, "instead")
        await Runner.run(agent, "something else", session=session)


async def test_usage_command(shared_backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    await runner_conversation(shared_backend.target, shared_backend)
    code, out, _ = await asyncio.to_thread(run, capsys, shared_backend.target, "usage", "talk")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "session talk, branch instead"
    shown = {line.split("requests")[0].strip(): line.split()[-1] for line in lines[1:]}
    assert shown == {
        "turn 1": "12",
        "turn 2": "29",
        "branch instead (2 turns)": "41",
        "session (3 turns)": "76",
    }
    code, out, _ = await asyncio.to_thread(
        run, capsys, "--json", shared_backend.target, "usage", "talk", "--branch", "main"
    )
    report = json.loads(out)
    assert report["branch_id"] == "main"
    assert report["branch"]["total_tokens"] == 12 + 35
    assert report["session"]["total_tokens"] == 12 + 35 + 29
    code, _, err = await asyncio.to_thread(
        run, capsys, shared_backend.target, "usage", "talk", "--branch", "nope"
    )
    assert code == 2
    assert "nope" in err

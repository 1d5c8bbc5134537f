"""Branches as readings of the log, on every backend: AdvancedSQLiteSession (SQLite)
and AdvancedSQLAlchemySession (every URL) behave alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventstore import BranchError, TurnNotFoundError
from sessions import (
    BranchingSession,
    SQLAlchemySession,
    SQLiteSession,
    StoreSession,
)

from ..conftest import Backend
from ..projections.replay_check import assert_matches_replay

Opener = Callable[[str], BranchingSession]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def call(name: str, n: int) -> dict[str, Any]:
    return {"type": "function_call", "name": name, "call_id": f"c{n}", "arguments": "{}"}


def output(n: int) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": f"c{n}", "output": "ok"}


async def three_turns(session: BranchingSession) -> None:
    await session.add_items([user("Hello"), assistant("Hi")])
    await session.add_items([user("Make a note"), call("make_note", 1), output(1), assistant("ok")])
    await session.add_items([user("List notes"), assistant("one note")])


async def version(session: StoreSession) -> int:
    info = await session.store.stream_info(session.session_id)
    return 0 if info is None else info.version


async def test_branch_from_turn_shares_the_earlier_turns(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await three_turns(session)
    main_items = await session.get_items()
    branch = await session.create_branch_from_turn(2, "retry")
    assert branch == "retry"
    assert await session.get_items() == main_items[:2]
    await session.add_items([user("Something else"), assistant("sure")])
    assert [i["content"] for i in await session.get_items()] == [
        "Hello",
        "Hi",
        "Something else",
        "sure",
    ]
    assert await session.get_items(branch_id="main") == main_items
    assert await session.get_items(limit=1) == [assistant("sure")]
    branches = await session.list_branches()
    assert [
        (b["branch_id"], b["message_count"], b["user_turns"], b["is_current"]) for b in branches
    ] == [
        ("main", 8, 3, False),
        ("retry", 4, 2, True),
    ]
    tree = await session.get_branch_tree()
    assert [(n.branch_id, n.parent_branch_id, n.is_current) for n in tree] == [
        ("main", None, False),
        ("retry", "main", True),
    ]
    assert tree[1].fork_seq is not None
    await assert_matches_replay(session.store)


async def test_popping_and_clearing_a_branch_never_changes_its_parent(
    advanced_sessions: Opener,
) -> None:
    session = advanced_sessions("s")
    await three_turns(session)
    main_items = await session.get_items()
    await session.create_branch_from_turn(3, "b")
    assert len(await session.get_items()) == 6
    # Pop back through the shared prefix, then add: main keeps everything.
    for expected in reversed(main_items[:6]):
        assert await session.pop_item() == expected
    assert await session.pop_item() is None
    await session.add_items([user("fresh")])
    assert await session.get_items() == [user("fresh")]
    assert await session.get_items(branch_id="main") == main_items
    # Pop on the parent: the branch keeps what it shares.
    await session.switch_to_branch("main")
    await session.create_branch_from_turn(2, "c")
    await session.switch_to_branch("main")
    for _ in range(7):
        await session.pop_item()
    assert await session.get_items() == main_items[:1]
    assert await session.get_items(branch_id="c") == main_items[:2]
    await session.add_items([assistant("again")])
    assert await session.get_items() == [*main_items[:1], assistant("again")]
    await session.switch_to_branch("c")
    await session.clear_session()  # every branch, and main becomes current
    assert await session.get_items() == []
    for b in ("main", "b", "c"):
        assert await session.get_items(branch_id=b) == []
    await assert_matches_replay(session.store)


async def test_branch_of_a_branch_and_from_any_item(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await three_turns(session)
    items = await session.get_items()
    await session.create_branch_from_item(4, "up-to-the-call-output")
    assert await session.get_items() == items[:5]
    await session.add_items([assistant("a")])
    await session.create_branch_from_item(-1, "newest")
    assert await session.get_items() == [*items[:5], assistant("a")]
    await session.pop_item()
    await session.pop_item()
    await session.add_items([assistant("b")])
    assert await session.get_items() == [*items[:4], assistant("b")]
    assert await session.get_items(branch_id="up-to-the-call-output") == [
        *items[:5],
        assistant("a"),
    ]
    assert await session.get_items(branch_id="main") == items
    tree = {n.branch_id: n.parent_branch_id for n in await session.get_branch_tree()}
    assert tree == {
        "main": None,
        "up-to-the-call-output": "main",
        "newest": "up-to-the-call-output",
    }
    with pytest.raises(TurnNotFoundError):
        await session.create_branch_from_item(99)
    await assert_matches_replay(session.store)


async def test_refused_branch_operations_write_nothing(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await three_turns(session)
    await session.create_branch_from_turn(2, "taken")
    await session.switch_to_branch("main")
    await session.create_branch_from_turn(3, "gone")
    await session.delete_branch("gone", force=True)
    assert (await session.list_branches())[0]["is_current"]  # force switched to main
    before = await version(session)
    refusals: list[tuple[type[Exception], Any]] = [
        (TurnNotFoundError, session.create_branch_from_turn(9)),
        (TurnNotFoundError, session.create_branch_from_turn(0)),
        (BranchError, session.create_branch_from_turn(1, "  ")),
        (BranchError, session.create_branch_from_turn(1, "taken")),
        (BranchError, session.create_branch_from_turn(1, "gone")),  # deleted names stay used
        (BranchError, session.create_branch_from_turn(1, "main")),
        (BranchError, session.switch_to_branch("nope")),
        (BranchError, session.switch_to_branch("gone")),
        (BranchError, session.delete_branch("main")),
        (BranchError, session.delete_branch("nope")),
        (BranchError, session.delete_branch("")),
        (TurnNotFoundError, session.create_branch_from_content("not said anywhere")),
    ]
    for error, attempt in refusals:
        with pytest.raises(error):
            await attempt
        assert isinstance(error("x"), ValueError)  # what the SDK raises
    await session.switch_to_branch("taken")
    with pytest.raises(BranchError, match="force"):
        await session.delete_branch("taken")
    assert await version(session) == before + 1  # only the successful switch
    assert [b["branch_id"] for b in await session.list_branches()] == ["main", "taken"]


async def test_the_current_branch_is_durable(advanced_sessions: Opener, backend: Backend) -> None:
    if backend.name == "sqlite-memory":
        pytest.skip("a private in-memory database ends with its session object")
    first = advanced_sessions("s")
    await three_turns(first)
    await first.create_branch_from_turn(3, "b")
    await first.close()
    again = advanced_sessions("s")
    assert (await again.list_branches())[1]["is_current"]
    assert len(await again.get_items()) == 6
    # A plain session on the same id works on main (documented).
    plain: StoreSession
    if backend.name == "sqlite-file":
        plain = SQLiteSession("s", backend.target)
    else:
        plain = SQLAlchemySession("s", db_url=backend.target)
    async with plain:
        assert len(await plain.get_items()) == 8
        await plain.add_items([user("from a plain session")])
    assert len(await again.get_items(branch_id="main")) == 9
    assert len(await again.get_items()) == 6
    await assert_matches_replay(again.store)


async def test_whole_turn_windows(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await three_turns(session)
    items = await session.get_items()
    assert await session.get_items(turns=1) == items[6:]
    assert await session.get_items(turns=2) == items[2:]
    assert await session.get_items(turns=2, limit=3) == items[5:]
    assert await session.get_items(turns=10) == items
    assert await session.get_items(turns=0) == []
    # limit=4 would start with the tool output; turns=2 never cuts a call from its output
    window = await session.get_items(turns=2)
    assert window[0]["role"] == "user"
    await session.create_branch_from_turn(3)
    await session.add_items([user("branch turn"), assistant("x")])
    assert await session.get_items(turns=2) == [*items[2:6], user("branch turn"), assistant("x")]
    with pytest.raises(ValueError, match="turns"):
        await session.get_items(turns=-1)


async def test_whole_turn_windows_on_plain_sessions(tmp_path: Path) -> None:
    async with SQLiteSession("s", tmp_path / "plain.db") as session:
        await session.add_items([user("a"), call("f", 1), output(1), assistant("b")])
        await session.add_items([user("c"), assistant("d")])
        assert await session.get_items(turns=1) == [user("c"), assistant("d")]


async def test_time_travel(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await session.add_items([user("one")])
    v1 = await version(session)
    moment = datetime.now(UTC)
    await session.add_items([assistant("two")])
    await session.pop_item()
    await session.add_items([assistant("three")])
    assert await session.get_items(as_of=v1) == [user("one")]
    assert await session.get_items(as_of=v1 + 1) == [user("one"), assistant("two")]
    assert await session.get_items(as_of=v1 + 2) == [user("one")]
    assert await session.get_items(as_of=moment) == [user("one")]
    assert await session.get_items(as_of=0) == []
    assert await session.get_items(as_of=await version(session), limit=1) == [assistant("three")]
    await session.create_branch_from_turn(1, "b")
    branched = await version(session)
    assert await session.get_items(as_of=branched, branch_id="b") == []
    with pytest.raises(BranchError):
        await session.get_items(as_of=v1, branch_id="b")
    with pytest.raises(ValueError, match="no version"):
        await session.get_items(as_of=branched + 5)


async def test_search_matches_what_users_said(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await session.add_items([user('Plan the "Q3" Offsite'), assistant("role content")])
    parts = {"role": "user", "content": [{"type": "input_text", "text": "Café at noon"}]}
    await session.add_items([parts, assistant("ok")])
    await session.add_items([user("nothing here")])
    found = await session.find_turns_by_content("offsite")
    assert [t["turn"] for t in found] == [1]
    assert found[0]["full_content"] == 'Plan the "Q3" Offsite'
    # ASCII letters match in any case, other letters only in theirs (as the SDK's LIKE)
    assert [t["turn"] for t in await session.find_turns_by_content("CAFé")] == [2]
    assert await session.find_turns_by_content("CAFÉ") == []
    assert await session.find_turns_by_content("role") == []  # a key name, not said
    assert await session.find_turns_by_content("content") == []
    assert await session.find_turns_by_content('\\"Q3') == []  # an escape sequence
    assert [t["turn"] for t in await session.find_turns_by_content('"Q3"')] == [1]
    turns = await session.get_conversation_turns()
    assert [(t["turn"], t["can_branch"]) for t in turns] == [(1, True), (2, True), (3, True)]
    assert turns[1]["content"] == '[{"type": "input_text", "text": "Café at noon"}]'
    created = await session.create_branch_from_content("café")
    assert await session.get_items() == [user('Plan the "Q3" Offsite'), assistant("role content")]
    assert created.startswith("branch_from_turn_2_")


async def test_turn_structure_and_tool_usage(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await session.add_items([{"role": "system", "content": "be brief"}])
    await three_turns(session)
    await session.add_items(
        [user("Two notes"), call("make_note", 2), output(2), call("make_note", 3), output(3)]
    )
    by_turn = await session.get_conversation_by_turns()
    assert sorted(by_turn) == [0, 1, 2, 3, 4]
    assert by_turn[0] == [{"type": "other", "tool_name": None}]
    assert by_turn[2] == [
        {"type": "user", "tool_name": None},
        {"type": "function_call", "tool_name": "make_note"},
        {"type": "function_call_output", "tool_name": None},
        {"type": "assistant", "tool_name": None},
    ]
    assert await session.get_tool_usage() == [("make_note", 1, 2), ("make_note", 2, 4)]
    await session.create_branch_from_turn(4, "b")
    assert await session.get_tool_usage() == [("make_note", 1, 2)]
    assert await session.get_tool_usage(branch_id="main") == [
        ("make_note", 1, 2),
        ("make_note", 2, 4),
    ]


async def test_plain_and_advanced_sessions_on_one_database(
    advanced_sessions: Opener, backend: Backend
) -> None:
    """Mixing classes in any order leaves every projection equal to a replay."""
    if backend.name == "sqlite-memory":
        pytest.skip("a private in-memory database has one session object")
    plain: StoreSession
    if backend.name == "sqlite-file":
        plain = SQLiteSession("mixed", backend.target)
    else:
        plain = SQLAlchemySession("mixed", db_url=backend.target, create_tables=True)
    async with plain:
        await plain.add_items([user("plain first"), assistant("a")])
        session = advanced_sessions("mixed")
        await session.add_items([user("advanced"), assistant("b")])
        await session.create_branch_from_turn(2, "b")
        await plain.pop_item()
        await session.add_items([user("on b")])
        await plain.add_items([user("plain again")])
        await session.pop_item()
        assert [i["content"] for i in await plain.get_items()] == [
            "plain first",
            "a",
            "advanced",
            "plain again",
        ]
        assert [i["content"] for i in await session.get_items()] == ["plain first", "a"]
        await assert_matches_replay(session.store)


async def test_runner_branches_mid_conversation_and_continues_on_both(
    advanced_sessions: Opener,
) -> None:
    from agents import Agent, Runner, function_tool
    from agents.testing import ScriptedModel, assistant_message, function_call

    @function_tool
    def make_note(title: str) -> str:
        """Make a note."""
        return f"made {title}"

    model = ScriptedModel(
        [
            [assistant_message("hello!", item_id="r1")],
            [function_call("make_note", {"title": "groceries"}, call_id="c1")],
            [assistant_message("noted", item_id="r2")],
            [assistant_message("on the branch", item_id="r3")],
            [assistant_message("back on main", item_id="r4")],
        ]
    )
    agent = Agent(name="Notes", instructions="Help with notes.", model=model, tools=[make_note])
    session = advanced_sessions("runner")
    await Runner.run(agent, "hi", session=session)
    await Runner.run(agent, "note groceries", session=session)
    main_before = await session.get_items()
    assert await session.get_tool_usage() == [("make_note", 1, 2)]

    await session.create_branch_from_turn(2, "instead")
    await Runner.run(agent, "tell me a joke", session=session)
    texts = [
        c["content"] if isinstance(c["content"], str) else c["content"][0]["text"]
        for c in model.calls[3].input
        if "content" in c
    ]
    assert texts == ["hi", "hello!", "tell me a joke"], "the model saw the branch, not main"

    await session.switch_to_branch("main")
    await Runner.run(agent, "thanks", session=session)
    assert model.calls[4].input[: len(main_before)] == main_before
    assert [t["turn"] for t in await session.get_conversation_turns()] == [1, 2, 3]
    assert [t["turn"] for t in await session.get_conversation_turns("instead")] == [1, 2]
    await assert_matches_replay(session.store)

"""The public contract the Agents SDK's own tests check of AdvancedSQLiteSession and
EncryptedSession, where convstore's sessions once answered otherwise (see
docs/sdk-compatibility.md), on every backend: search case, branches after a clear,
a session object whose branch another one deleted, ``store_run_usage`` without a
turn or on a closed session, delegation through EncryptedSession, a wrong key."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents.run_context import RunContextWrapper
from agents.usage import Usage
from cryptography.fernet import InvalidToken
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from eventstore import BranchError, OperationalError, UsageRecorded
from sessions import AdvancedSQLiteSession, EncryptedSession, SQLiteSession, UsageSession

from .conftest import Sessions
from .encryption import KEY, OTHER_KEY, encrypted, flip_byte, rewrite_newest

Opener = Callable[[str], UsageSession]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def run_result(requests: int, i: int, o: int) -> Any:
    """What ``store_run_usage`` reads of a RunResult: ``context_wrapper.usage``."""
    spent = Usage(
        requests=requests,
        input_tokens=i,
        output_tokens=o,
        total_tokens=i + o,
        input_tokens_details=InputTokensDetails(cached_tokens=3, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=2),
    )
    return SimpleNamespace(context_wrapper=RunContextWrapper(context=None, usage=spent))


def turns_of(found: list[dict[str, Any]]) -> list[int]:
    return [t["turn"] for t in found]


async def usage_events(session: UsageSession) -> list[UsageRecorded]:
    return [
        e.event
        for e in await session.store.read_stream(session.session_id)
        if isinstance(e.event, UsageRecorded)
    ]


# -- search -------------------------------------------------------------------------


async def test_search_ignores_the_case_of_ascii_letters_only(advanced_sessions: Opener) -> None:
    # The SDK searches with SQLite's LIKE: "CAFÉ" does not contain "é" there.
    session = advanced_sessions("s")
    await session.add_items([user("CAFÉ"), user("café"), user("Plan B")])
    assert turns_of(await session.find_turns_by_content("é")) == [2]
    assert turns_of(await session.find_turns_by_content("É")) == [1]
    assert turns_of(await session.find_turns_by_content("Café")) == [2]
    assert turns_of(await session.find_turns_by_content("PLAN b")) == [3]
    assert (await session.create_branch_from_content("É")).startswith("branch_from_turn_1_")


async def test_encrypted_search_ignores_the_case_of_ascii_letters_only(tmp_path: Path) -> None:
    base = AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "e.db")
    async with EncryptedSession(session=base, encryption_key=KEY) as session:
        await session.add_items([user("CAFÉ"), user("café")])
        assert turns_of(await session.find_turns_by_content("é")) == [2]
        assert turns_of(await session.find_turns_by_content("CAF")) == [1, 2]
    await base.close()


# -- branches after a clear -----------------------------------------------------------


async def test_clear_session_deletes_every_branch_but_main(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await session.add_items([user("u1"), assistant("a1"), user("u2")])
    await session.create_branch_from_turn(2, "b")
    await session.create_branch_from_turn(1, "c")
    await session.clear_session()
    branches = await session.list_branches()
    assert [(b["branch_id"], b["is_current"]) for b in branches] == [("main", True)]
    assert await session.get_items(branch_id="b") == []
    with pytest.raises(BranchError, match="does not exist"):
        await session.switch_to_branch("b")
    await session.add_items([user("again")])
    with pytest.raises(BranchError, match="already been used"):  # ids stay used
        await session.create_branch_from_turn(1, "c")
    assert await session.get_items() == [user("again")]
    # A new object on the session starts on main too.
    assert [b["branch_id"] for b in await advanced_sessions("s").list_branches()] == ["main"]


async def wipe(other: UsageSession, how: str) -> list[dict[str, Any]]:
    """Delete the branch ``b`` through ``other``; what main holds afterwards."""
    if how == "clear":
        await other.clear_session()
        return []
    await other.delete_branch("b", force=True)
    return [user("u1"), assistant("a1"), user("u2")]


@pytest.mark.parametrize("how", ["clear", "delete"])
async def test_an_object_whose_branch_was_deleted_elsewhere_writes_to_main(
    advanced_sessions: Opener, how: str
) -> None:
    stale, other = advanced_sessions("s"), advanced_sessions("s")
    await stale.add_items([user("u1"), assistant("a1"), user("u2")])
    await stale.create_branch_from_turn(2, "b")
    main = await wipe(other, how)
    await stale.add_items([user("after")])  # not into the deleted branch, where it vanished
    assert await stale.get_items() == [*main, user("after")]
    assert await other.get_items(branch_id="main") == [*main, user("after")]
    assert [(b["branch_id"], b["is_current"]) for b in await stale.list_branches()] == [
        ("main", True)
    ]
    assert await stale.pop_item() == user("after")
    assert await other.get_items() == main


READS: dict[str, Callable[[UsageSession], Awaitable[Any]]] = {
    "items": lambda s: s.get_items(),
    "turns": lambda s: s.get_conversation_turns(),
    "search": lambda s: s.find_turns_by_content("new"),
    "conversation": lambda s: s.get_conversation_by_turns(),
    "tools": lambda s: s.get_tool_usage(),
    "usage": lambda s: s.get_turn_usage(1),
    "branches": lambda s: s.list_branches(),
}


async def test_an_object_whose_branch_was_deleted_under_a_child_reads_main(
    advanced_sessions: Opener,
) -> None:
    # The deleted branch keeps the rows its child shares: it must still read as gone.
    stale, other = advanced_sessions("s"), advanced_sessions("s")
    main = [user("u1"), assistant("a1"), user("u2")]
    await stale.add_items(main)
    await stale.create_branch_from_turn(2, "b")
    await stale.add_items([user("b's own"), assistant("b's answer")])
    await stale.create_branch_from_item(-1, "child")
    await stale.switch_to_branch("b")
    await other.delete_branch("b", force=True)
    assert await stale.get_items() == main
    assert await stale.get_items(limit=2) == main[-2:]
    assert await stale.get_items(branch_id="child") == [
        *main[:2],
        user("b's own"),
        assistant("b's answer"),
    ]


@pytest.mark.parametrize("read", list(READS))
async def test_an_object_whose_branch_was_cleared_elsewhere_reads_main(
    advanced_sessions: Opener, read: str
) -> None:
    stale, other = advanced_sessions("s"), advanced_sessions("s")
    await stale.add_items([user("old"), assistant("old answer"), user("old follow-up")])
    await stale.create_branch_from_turn(2, "b")
    await other.clear_session()
    await other.add_items(
        [
            user("new question"),
            {"type": "function_call", "name": "lookup", "arguments": "{}", "call_id": "c1"},
            assistant("new answer"),
        ]
    )
    await other.store_run_usage(run_result(1, 50, 30))
    expected = await READS[read](other)  # other is on main
    assert expected not in ([], {}, None)
    assert await READS[read](stale) == expected


# -- store_run_usage --------------------------------------------------------------------


async def test_store_run_usage_without_a_turn_records_nothing(advanced_sessions: Opener) -> None:
    session = advanced_sessions("s")
    await session.store_run_usage(run_result(1, 50, 30))  # a new session: no turn
    assert await session.get_session_usage() is None
    assert await session.get_turn_usage() == []
    await session.add_items([user("u1"), assistant("a1")])
    await session.pop_item()
    await session.pop_item()
    await session.store_run_usage(run_result(1, 50, 30))  # its only turn popped away
    assert await session.get_session_usage() is None
    assert await usage_events(session) == []
    await session.add_items([user("u2")])
    await session.store_run_usage(run_result(2, 20, 5))
    assert await session.get_session_usage() == {
        "requests": 2,
        "input_tokens": 20,
        "output_tokens": 5,
        "total_tokens": 25,
        "total_turns": 1,
    }
    first = await session.get_turn_usage(1)
    assert isinstance(first, dict)
    assert first["output_tokens_details"] == {"reasoning_tokens": 2}


async def test_store_run_usage_on_a_closed_session_logs_instead_of_raising(
    advanced_sessions: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    session = advanced_sessions("s")
    await session.add_items([user("q")])
    await session.close()
    with caplog.at_level(logging.WARNING, logger="convstore.sessions"):
        await session.store_run_usage(run_result(1, 50, 30))  # the SDK's: no exception
    assert "usage of session 's' not stored" in caplog.text
    assert "is closed" in caplog.text


async def test_store_run_usage_that_fails_is_logged_and_written_by_the_next_operation(
    advanced_sessions: Opener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    session = advanced_sessions("s")
    await session.add_items([user("q")])

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("the database went away")

    with monkeypatch.context() as patched, caplog.at_level(logging.WARNING, "convstore.sessions"):
        patched.setattr(session.store, "append_decided", fail)
        await session.store_run_usage(run_result(1, 50, 30))
    assert "the database went away" in caplog.text
    assert await session.get_session_usage() == {  # written by this query, once
        "requests": 1,
        "input_tokens": 50,
        "output_tokens": 30,
        "total_tokens": 80,
        "total_turns": 1,
    }
    await session.add_items([assistant("a")])
    assert len(await usage_events(session)) == 1


# -- EncryptedSession -----------------------------------------------------------------


class WithStats(SQLiteSession):
    """A user's own session class, with methods of its own."""

    def get_stats(self) -> dict[str, int]:
        return {"calls": 42}

    async def custom_async_method(self) -> str:
        return "custom"


async def test_encrypted_session_delegates_what_a_subclass_adds(tmp_path: Path) -> None:
    base = WithStats("s", tmp_path / "e.db")
    async with EncryptedSession("s", base, KEY) as session:
        assert session.get_stats() == {"calls": 42}
        assert await session.custom_async_method() == "custom"
        await session.add_items([user("hello")])
        assert await session.get_items() == [user("hello")]
        # convstore's own API and private names stay refused: they would bypass the
        # encryption or read ciphertext as items.
        for name in ("_store", "engine", "state_as_of", "nothing_like_this"):
            assert not hasattr(session, name), name
    await base.close()


async def test_encrypted_advanced_session_refuses_what_would_read_ciphertext(
    tmp_path: Path,
) -> None:
    base = AdvancedSQLiteSession(session_id="s", db_path=tmp_path / "e.db")
    async with EncryptedSession(session=base, encryption_key=KEY) as session:
        await session.add_items([user("q")])
        assert [b["branch_id"] for b in await session.list_branches()] == ["main"]
        for name in ("get_tool_usage", "get_conversation_by_turns", "_turns"):
            assert not hasattr(session, name), name
    await base.close()


async def test_a_wrong_or_damaged_key_raises_what_the_sdk_raises(sessions: Sessions) -> None:
    right = encrypted(sessions)
    await right.add_items([user("first"), assistant("second")])
    wrong = encrypted(sessions, key=OTHER_KEY)
    with pytest.raises(InvalidToken):  # the SDK's cryptography.fernet.InvalidToken
        await wrong.pop_item()
    with pytest.raises(InvalidToken):
        await wrong.get_items()
    assert await right.get_items() == [user("first"), assistant("second")]  # nothing lost
    await rewrite_newest(right.underlying_session, flip_byte)
    with pytest.raises(InvalidToken):
        await right.get_items()

"""import-sdk: databases written by the real Agents SDK session classes, into our log."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents.extensions.memory.advanced_sqlite_session import AdvancedSQLiteSession
from agents.memory import SQLiteSession as SdkSQLiteSession
from agents.usage import Usage

from eventstore import ConfigurationError, EventStore, UsageRecorded
from sessions.admin import audit_database, session_history
from sessions.base import HISTORY
from sessions.sdk_import import import_sdk

from .conftest import Backend

ALICE = [
    {"role": "user", "content": "Create a note"},
    {"type": "function_call", "call_id": "c1", "name": "note", "arguments": '{"t": "é"}'},
    {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    {"role": "assistant", "content": "Done ☃"},
]


async def write_sdk_file(path: Path) -> None:
    alice = SdkSQLiteSession("alice", path)
    await alice.add_items(ALICE[:2])
    await alice.add_items(ALICE[2:])
    bob = SdkSQLiteSession("bob", path)
    await bob.add_items([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "!"}])
    await bob.pop_item()
    alice.close()
    bob.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def target(backend: Backend) -> EventStore:
    return backend.store(projectors=(HISTORY,))


async def test_sdk_sqlite_sessions_come_over_in_order(target: EventStore, tmp_path: Path) -> None:
    source = tmp_path / "sdk.db"
    await write_sdk_file(source)
    before = digest(source)
    result = await import_sdk(target, str(source))
    assert (result.sessions, result.items, result.notes) == (2, 5, [])
    assert await session_history(target, "alice") == ALICE
    assert await session_history(target, "bob") == [{"role": "user", "content": "Hi"}]
    assert digest(source) == before  # the source is read, never changed
    assert (await audit_database(target)).ok


async def test_running_it_again_imports_only_what_is_new(
    target: EventStore, tmp_path: Path
) -> None:
    source = tmp_path / "sdk.db"
    await write_sdk_file(source)
    await import_sdk(target, str(source))
    again = await import_sdk(target, str(source))
    assert (again.sessions, again.items, again.up_to_date) == (0, 0, 2)
    alice = SdkSQLiteSession("alice", source)
    await alice.add_items([{"role": "user", "content": "And another"}])
    alice.close()
    third = await import_sdk(target, f"sqlite:///{source}")
    assert (third.sessions, third.items, third.up_to_date) == (1, 1, 1)
    assert await session_history(target, "alice") == [
        *ALICE,
        {"role": "user", "content": "And another"},
    ]
    assert (await target.stream_info("alice")).version == 6  # type: ignore[union-attr]


async def test_a_native_session_of_the_same_id_is_left_alone(
    target: EventStore, tmp_path: Path
) -> None:
    from sessions import StoreSession

    await StoreSession("alice", target).add_items([{"role": "user", "content": "mine"}])
    source = tmp_path / "sdk.db"
    await write_sdk_file(source)
    result = await import_sdk(target, str(source))
    assert (result.sessions, result.skipped_sessions) == (1, 1)
    assert [r.session_id for r in result.refused] == ["alice"]
    assert any("not imported from the SDK" in note for note in result.notes)
    assert await session_history(target, "alice") == [{"role": "user", "content": "mine"}]


async def test_advanced_sessions_main_branch_and_usage(target: EventStore, tmp_path: Path) -> None:
    source = tmp_path / "advanced.db"
    session = AdvancedSQLiteSession(session_id="carol", db_path=source, create_tables=True)
    await session.add_items([{"role": "user", "content": "one"}])
    await session.add_items([{"role": "assistant", "content": "1"}])
    usage = Usage(requests=1, input_tokens=10, output_tokens=5, total_tokens=15)
    await session.store_run_usage(SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage)))  # type: ignore[arg-type]
    await session.add_items([{"role": "user", "content": "two"}])
    await session.create_branch_from_turn(2, "retry")
    await session.add_items([{"role": "user", "content": "two, again"}])
    usage = Usage(requests=2, input_tokens=20, output_tokens=7, total_tokens=27)
    await session.store_run_usage(SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage)))  # type: ignore[arg-type]
    session.close()
    result = await import_sdk(target, str(source))
    assert await session_history(target, "carol") == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "two"},
    ]
    assert result.usage == 2
    recorded = [e.event for e in await target.read_stream("carol")]
    used = [e for e in recorded if isinstance(e, UsageRecorded)]
    # Anchored at their turns' user messages (``turn`` is the owner branch's ordinal).
    assert [(u.branch_id, u.anchor_branch, u.turn, u.total_tokens) for u in used] == [
        ("main", "main", 1, 15),
        ("retry", "retry", 1, 27),
    ]
    assert result.branches == 1
    assert await session_history(target, "carol", branch="retry") == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "two, again"},
    ]
    assert (await audit_database(target)).ok
    again = await import_sdk(target, str(source))
    assert (again.sessions, again.branches, again.up_to_date) == (0, 0, 1)


async def test_custom_table_names_and_a_missing_table(target: EventStore, tmp_path: Path) -> None:
    source = tmp_path / "custom.db"
    session = SdkSQLiteSession(
        "dave", source, sessions_table="my_sessions", messages_table="my_messages"
    )
    await session.add_items([{"role": "user", "content": "hello"}])
    session.close()
    with pytest.raises(ConfigurationError, match="agent_messages"):
        await import_sdk(target, str(source))
    result = await import_sdk(
        target, str(source), sessions_table="my_sessions", messages_table="my_messages"
    )
    assert result.items == 1
    with pytest.raises(ConfigurationError, match="no SQLite database"):
        await import_sdk(target, str(tmp_path / "missing.db"))
    assert not (tmp_path / "missing.db").exists()


async def test_from_the_sdk_sqlalchemy_session(target: EventStore, tmp_path: Path) -> None:
    from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

    url = f"sqlite+aiosqlite:///{tmp_path / 'sa.db'}"
    session = SQLAlchemySession.from_url("erin", url=url, create_tables=True)
    await session.add_items(ALICE)
    await session.engine.dispose()
    result = await import_sdk(target, url)
    assert result.items == 4
    assert await session_history(target, "erin") == ALICE


@pytest.mark.postgres
async def test_from_the_sdk_sqlalchemy_session_on_postgres(tmp_path: Path) -> None:
    from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession
    from sqlalchemy import text

    from .conftest import server_url

    url = server_url("postgres").replace("postgresql://", "postgresql+asyncpg://", 1)
    tables = {"sessions_table": "sdk_import_sessions", "messages_table": "sdk_import_messages"}
    session = SQLAlchemySession.from_url("frank", url=url, create_tables=True, **tables)
    try:
        await session.add_items(ALICE)
        async with EventStore(tmp_path / "target.db", projectors=[HISTORY]) as target:
            result = await import_sdk(target, url, **tables)
            assert result.items == 4
            assert await session_history(target, "frank") == ALICE
    finally:
        async with session.engine.begin() as conn:
            await conn.execute(text("DROP TABLE sdk_import_messages"))
            await conn.execute(text("DROP TABLE sdk_import_sessions"))
        await session.engine.dispose()


# -- usage per turn, the tables it needs, hostile rows --------------------------------


async def _run(sdk: AdvancedSQLiteSession, agent: Any, text: str) -> None:
    """One Runner run on the SDK's session, its usage stored the SDK's way."""
    from agents import Runner

    result = await Runner.run(agent, text, session=sdk)
    await sdk.store_run_usage(result)


async def write_advanced_file(path: Path) -> dict[str, list[dict[str, Any]]]:
    """An AdvancedSQLiteSession database written by the SDK: runs on main, a branch with
    usage stored for a turn it copied from main, a run on the branch. Returns what the
    SDK's get_turn_usage gives per branch."""
    from agents import Agent, Usage, set_tracing_disabled
    from agents.testing import ScriptedModel, assistant_message

    set_tracing_disabled(True)
    replies = [[assistant_message(f"answer {n}")] for n in range(4)]
    model = ScriptedModel(
        replies,
        default_usage=Usage(requests=1, input_tokens=20, output_tokens=5, total_tokens=25),
    )
    agent = Agent(name="notes", instructions="Help.", model=model)
    sdk = AdvancedSQLiteSession(session_id="carol", db_path=path, create_tables=True)
    await _run(sdk, agent, "first question")
    await _run(sdk, agent, "second question")
    await _run(sdk, agent, "third question")
    await sdk.create_branch_from_turn(3, "retry")  # turns 1 and 2, listed on the branch
    # Usage stored on the branch for a turn it copied (the SDK keeps it apart from main's).
    usage = Usage(requests=2, input_tokens=70, output_tokens=9, total_tokens=79)
    await sdk.store_run_usage(SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage)))  # type: ignore[arg-type]
    await _run(sdk, agent, "third question, again")
    per_branch = {b: await sdk.get_turn_usage(branch_id=b) for b in ("main", "retry")}
    sdk.close()
    return per_branch  # type: ignore[return-value]


def _figures(turns: Any) -> list[tuple[int, int, int, int, int]]:
    return [
        (
            t["user_turn_number"],
            t["requests"],
            t["input_tokens"],
            t["output_tokens"],
            t["total_tokens"],
        )
        for t in turns
    ]


async def test_per_turn_usage_comes_across_with_the_sdks_turns_and_branches(
    target: EventStore, tmp_path: Path
) -> None:
    from sessions.usage import UsageSession

    source = tmp_path / "advanced.db"
    sdk_turns = await write_advanced_file(source)
    assert _figures(sdk_turns["retry"])[0] == (2, 2, 70, 9, 79)  # the branch's own figures
    result = await import_sdk(target, str(source))
    assert (result.usage, result.branches, result.skipped) == (5, 1, 0)
    carol = UsageSession("carol", target)
    for branch, expected in sdk_turns.items():
        ours = await carol.get_turn_usage(branch_id=branch)
        assert isinstance(ours, list)
        # The branch shows the turn it inherits from main (turn 1) as well: convstore
        # counts a shared turn for every branch that shows it (docs/usage.md).
        inherited = [
            t
            for t in ours
            if t["user_turn_number"] not in {e["user_turn_number"] for e in expected}
        ]
        assert _figures(inherited) == ([] if branch == "main" else [(1, 1, 20, 5, 25)])
        assert _figures([t for t in ours if t not in inherited]) == _figures(expected), branch
        for n, turn in enumerate(expected, 1):
            one = await carol.get_turn_usage(turn["user_turn_number"], branch_id=branch)
            assert isinstance(one, dict)
            assert one["total_tokens"] == turn["total_tokens"], (branch, n)
            assert one["input_tokens_details"]["cached_tokens"] == 0
    session = await carol.get_session_usage()
    assert session is not None
    assert session["total_tokens"] == sum(t["total_tokens"] for b in sdk_turns.values() for t in b)
    assert (await audit_database(target)).ok
    again = await import_sdk(target, str(source))
    assert (again.usage, again.items, again.up_to_date) == (0, 0, 1)


async def test_the_import_creates_the_usage_tables(shared_backend: Backend, tmp_path: Path) -> None:
    """A fresh database: the import creates what the Advanced sessions' reads need, so a
    store that does not create tables reads the usage."""
    from projections.usage_table import USAGE
    from sessions.usage import usage_report

    source = tmp_path / "advanced.db"
    await write_advanced_file(source)
    await import_sdk(shared_backend.store(projectors=(HISTORY,)), str(source))
    reader = shared_backend.store(projectors=(HISTORY, USAGE), create_tables=False)
    report = await usage_report(reader, "carol", "main")
    assert [t.turn for t in report.turns] == [1, 2, 3]


def write_hostile_rows(path: Path) -> None:
    """Rows the SDK would not write, added behind its back."""
    import sqlite3

    deep = "[" * 1000 + "]" * 1000
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO agent_sessions (session_id) VALUES ('')")
        rows = [
            ("alice", deep),  # nested 1,000 deep
            ("", '{"role": "user", "content": "no session id"}'),
            ("alice", "NaN"),  # JSON to Python, not to JSON
            ("alice", b"\xff\xfe"),  # not UTF-8 (a blob)
            ("bob", "not json"),
        ]
        conn.executemany(
            "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)", rows
        )
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) "
            "VALUES ('bob', CAST(X'7B22FF22' AS TEXT))"  # not UTF-8 (text)
        )
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) "
            "VALUES (CAST(X'62FF' AS TEXT), '{}')"  # a session id that is not UTF-8
        )
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) "
            'VALUES (\'zoe\', \'{"role": "user", "content": "after them all"}\')'
        )
    conn.close()


async def test_hostile_rows_are_reported_and_skipped(target: EventStore, tmp_path: Path) -> None:
    from eventstore import InvalidArgumentError, SerializationError

    source = tmp_path / "sdk.db"
    await write_sdk_file(source)
    write_hostile_rows(source)
    result = await import_sdk(target, str(source))
    assert (result.skipped_rows, result.skipped_sessions) == (5, 2)
    refused = {(r.session_id, type(r.error)) for r in result.refused}
    assert refused == {
        (None, InvalidArgumentError),  # '' and the id that is not UTF-8
        ("alice", SerializationError),
        ("bob", SerializationError),
    }
    deep = [r for r in result.refused if "nested more than 256 levels" in str(r.error)]
    assert len(deep) == 1
    assert isinstance(deep[0].error, SerializationError)
    assert len(result.notes) == 7
    # Everything else came over, the session after the hostile ones included.
    assert await session_history(target, "alice") == ALICE
    assert await session_history(target, "bob") == [{"role": "user", "content": "Hi"}]
    assert await session_history(target, "zoe") == [{"role": "user", "content": "after them all"}]
    assert (await audit_database(target)).ok
    again = await import_sdk(target, str(source))
    assert (again.items, again.up_to_date, again.skipped) == (0, 3, 7)


async def test_hostile_branch_and_usage_rows(target: EventStore, tmp_path: Path) -> None:
    import sqlite3

    from eventstore import InvalidArgumentError

    source = tmp_path / "advanced.db"
    await write_advanced_file(source)
    with sqlite3.connect(source) as conn:
        conn.execute(
            "INSERT INTO turn_usage (session_id, branch_id, user_turn_number, requests) "
            "VALUES ('carol', 'main', 9, 'many')"
        )
        conn.execute(
            "INSERT INTO turn_usage (session_id, branch_id, user_turn_number, "
            "input_tokens_details) VALUES ('carol', 'retry', 7, ?)",
            ("[" * 1000 + "]" * 1000,),
        )
        conn.execute(
            "INSERT INTO message_structure (session_id, message_id, branch_id, message_type, "
            "sequence_number, user_turn_number) VALUES ('carol', 1, '', 'user', 99, 1)"
        )
    conn.close()
    result = await import_sdk(target, str(source))
    assert (result.skipped_rows, result.usage, result.branches) == (3, 5, 1)
    errors = sorted(type(r.error).__name__ for r in result.refused)
    assert errors == ["InvalidArgumentError", "InvalidArgumentError", "SerializationError"]
    assert any(
        isinstance(r.error, InvalidArgumentError) and "branch ''" in r.row for r in result.refused
    )
    assert (await audit_database(target)).ok

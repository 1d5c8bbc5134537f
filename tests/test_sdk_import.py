"""import-sdk: databases written by the real Agents SDK session classes, into our log."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

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
    assert result.sessions == 1
    assert any("'alice' already exists" in note for note in result.notes)
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
    assert [(u.branch_id, u.turn, u.input_tokens, u.total_tokens) for u in used] == [
        ("main", 1, 10, 15),
        ("retry", 2, 20, 27),
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

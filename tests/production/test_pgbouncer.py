"""convstore behind PgBouncer 1.18 in transaction pooling mode.

Each transaction of a client connection may run on another server connection, so the
driver's named prepared statements and per-connection settings cannot be relied on:

* a URL with ``?pooler=transaction`` (and an engine made with the documented
  ``connect_args``) works for every session class, concurrently, and for the CLI;
* an engine made without them fails with a typed ``PoolerError`` naming the fix;
* the timeouts hold in every write transaction and never stay on a server connection;
* a tailing reader (``read_all``) never skips an event while writers append.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import EventStore, LockTimeoutError, PoolerError
from sessions import (
    AdvancedSQLAlchemySession,
    EncryptedSession,
    SQLAlchemySession,
    StoreSession,
)

from .conftest import Database

# What docs/operations.md tells a user who creates the engine behind PgBouncer.
POOLED_CONNECT_ARGS = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
TASKS = 8
KEY = "a master key for the pooler tests"


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def plain(url: str) -> str:
    return url.split("?", 1)[0]


async def create_tables(url: str) -> None:
    async with EventStore(url) as store:
        await store.ensure_tables()


async def test_an_engine_not_set_up_for_the_pooler_fails_with_the_fix(database: Database) -> None:
    """The failure a user meets (asyncpg's statement names collide or go missing between
    server connections) is a PoolerError that says what to change."""
    await create_tables(database.pooled)
    engine = create_async_engine(asyncpg_url(database.bouncer))

    async def work(n: int) -> None:
        async with SQLAlchemySession(f"plain-{n}", engine=engine) as session:
            for i in range(25):
                await session.add_items([{"role": "user", "content": str(i)}])
                await session.get_items(limit=5)

    try:
        outcomes = await asyncio.gather(*(work(n) for n in range(TASKS)), return_exceptions=True)
    finally:
        await engine.dispose()
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert errors, "eight sessions at once through the pooler, and no error?"
    for error in errors:
        assert isinstance(error, PoolerError), error
        assert "pooler=transaction" in str(error)
        assert "statement_cache_size" in str(error)


async def _add_get_pop(session: Any, n: int) -> list[Any]:
    """Five adds, reads and one pop; what the history must then hold."""
    expected = []
    for i in range(5):
        item = {"role": "user", "content": f"task {n} item {i}"}
        await session.add_items([item])
        expected.append(item)
        assert (await session.get_items(limit=1)) == [item]
    assert await session.pop_item() == expected.pop()
    assert await session.get_items() == expected
    return expected


async def test_every_session_class_through_pgbouncer(database: Database) -> None:
    """Eight tasks at once per class, each on its own session, plus two tasks sharing
    one session: every read answers what was written."""
    await create_tables(database.pooled)
    engine = create_async_engine(asyncpg_url(database.bouncer), connect_args=POOLED_CONNECT_ARGS)
    store = EventStore(database.pooled)
    assert store.pooler == "transaction"

    async def by_url(n: int) -> None:
        async with SQLAlchemySession(f"url-{n}", db_url=database.pooled) as session:
            await _add_get_pop(session, n)

    async def by_engine(n: int) -> None:
        async with SQLAlchemySession(f"engine-{n}", engine=engine) as session:
            await _add_get_pop(session, n)

    async def advanced(n: int) -> None:
        async with AdvancedSQLAlchemySession(f"advanced-{n}", engine=engine) as session:
            kept = await _add_get_pop(session, n)
            branch = await session.create_branch_from_turn(2)
            assert await session.get_items() == kept[:1]
            assert {b["branch_id"] for b in await session.list_branches()} >= {"main", branch}
            await session.get_session_usage()

    async def encrypted(n: int) -> None:
        base = SQLAlchemySession(f"sealed-{n}", engine=engine)
        async with EncryptedSession(session=base, encryption_key=KEY, ttl=None) as session:
            await _add_get_pop(session, n)

    async def on_store(n: int) -> None:
        await _add_get_pop(StoreSession(f"store-{n}", store), n)

    async def shared(n: int) -> None:
        session = StoreSession("shared", store)
        for i in range(5):
            await session.add_items([{"role": "user", "content": f"{n}.{i}"}])

    try:
        for work in (by_url, by_engine, advanced, encrypted, on_store):
            await asyncio.gather(*(work(n) for n in range(TASKS)))
        await asyncio.gather(shared(0), shared(1))
        items = await StoreSession("shared", store).get_items()
        assert sorted(item["content"] for item in items) == sorted(
            f"{n}.{i}" for n in range(2) for i in range(5)
        )
    finally:
        await store.close()
        await engine.dispose()


async def test_timeouts_hold_per_transaction_and_stay_off_server_connections(
    database: Database,
) -> None:
    """Behind the pooler each write transaction sets its own bounds (set_config(...,
    true)): they are in force inside it, a blocked write gets LockTimeoutError, and a
    server connection handed to the next client carries none of them."""
    settings = ("lock_timeout", "idle_in_transaction_session_timeout")

    def show(conn: Any) -> list[str]:
        return [conn.execute(text(f"SHOW {name}")).scalar_one() for name in settings]

    async with EventStore(database.pooled, lock_timeout=0.5) as store:
        assert await store.run(show, write=True) == ["500ms", "5s"]
        await StoreSession("locked", store).add_items([{"role": "user", "content": "hi"}])
        # Other clients of the pooler, on the same few server connections, see the
        # server's defaults.
        for _ in range(3 * TASKS):
            raw = await asyncpg.connect(plain(database.bouncer), statement_cache_size=0)
            try:
                assert [await raw.fetchval(f"SHOW {name}") for name in settings] == ["0", "0"]
            finally:
                await raw.close()
        holder = await asyncpg.connect(database.direct)
        try:
            async with holder.transaction():
                await holder.execute(
                    "SELECT * FROM convstore_streams WHERE stream_id = 'locked' FOR UPDATE"
                )
                with pytest.raises(LockTimeoutError):
                    async with asyncio.timeout(30):  # (no bound would wait for ever)
                        await StoreSession("locked", store).add_items(
                            [{"role": "user", "content": "blocked"}]
                        )
        finally:
            await holder.close()


async def test_a_tailing_reader_through_pgbouncer_skips_nothing(database: Database) -> None:
    """``read_all`` after the last position seen, while writers append: every event is
    read once, in the order of the log."""
    async with EventStore(database.pooled) as store:
        await store.ensure_tables()
        done = asyncio.Event()
        seen: list[int] = []

        async def tail() -> None:
            after = 0
            while True:
                finished = done.is_set()
                page = await store.read_all(after_position=after, limit=50)
                for event in page:
                    seen.append(event.position)
                    after = event.position
                if finished and len(page) < 50:
                    return
                await asyncio.sleep(0.005)

        async def write(n: int) -> None:
            session = StoreSession(f"tail-{n}", store)
            for i in range(15):
                await session.add_items([{"role": "user", "content": str(i)}])

        reader = asyncio.create_task(tail())
        await asyncio.gather(*(write(n) for n in range(TASKS)))
        done.set()
        await reader
        everything = [event.position for event in await store.read_all()]
    assert seen == everything
    assert len(everything) == TASKS * (15 + 1)  # each session's start and its items


def convstore(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sessions.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"CONVSTORE_AUDIT_KEY": "a key kept apart", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


async def test_the_cli_through_pgbouncer(database: Database, tmp_path: Path) -> None:
    """audit, export, import, replay, verify and checkpoint, all through the pooler."""
    async with EventStore(database.pooled) as store:
        await asyncio.gather(
            *(
                StoreSession(f"cli-{n}", store).add_items([{"role": "user", "content": str(n)}])
                for n in range(TASKS)
            )
        )
    url = database.pooled
    exported, again, heads = (tmp_path / name for name in ("a.jsonl", "b.jsonl", "h.jsonl"))
    assert "no finding" in convstore(url, "audit")
    convstore(url, "checkpoint", "-o", str(heads))
    convstore(url, "export", "-o", str(exported))
    convstore(url, "replay")
    convstore(url, "verify")
    assert "no finding" in convstore(url, "audit", "--against", str(heads))
    target = url.replace(f"/{database.name}?", f"/{database.name}_copy?")
    await _create_database(database, f"{database.name}_copy")
    convstore(target, "import", str(exported))
    convstore(target, "export", "-o", str(again))
    assert again.read_bytes() == exported.read_bytes()
    assert "no finding" in convstore(target, "audit")


async def _create_database(database: Database, name: str) -> None:
    admin = await asyncpg.connect(plain(database.direct))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()

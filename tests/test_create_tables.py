"""sessions.create_tables: the tables an application creates at start-up."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import inspect

from eventstore import SchemaError
from sessions import AdvancedSQLAlchemySession, SQLAlchemySession, create_tables

from .conftest import Backend, make_engine


async def table_names(backend: Backend) -> set[str]:
    engine = await make_engine(backend)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_sessions_on_the_engine_work_without_create_tables(
    shared_backend: Backend,
) -> None:
    engine = await make_engine(shared_backend)
    try:
        await create_tables(engine)
        assert engine.pool.checkedout() == 0  # the engine is used, not kept busy
        async with SQLAlchemySession("a", engine=engine) as plain:
            await plain.add_items([{"role": "user", "content": "hi"}])
        async with AdvancedSQLAlchemySession("a", engine=engine) as advanced:
            assert await advanced.get_items() == [{"role": "user", "content": "hi"}]
            await advanced.create_branch_from_turn(1)
        await create_tables(engine)  # again, as at the next start: nothing changes
        async with AdvancedSQLAlchemySession("a", engine=engine) as again:
            assert await again.get_items() == []  # the new branch is current: turn 1 is cut
            assert len(await again.get_items(branch_id="main")) == 1
    finally:
        await engine.dispose()
    assert {"convstore_events", "convstore_streams"} <= await table_names(shared_backend)


async def test_workers_starting_together_create_the_tables_once(
    shared_backend: Backend,
) -> None:
    engines = [await make_engine(shared_backend) for _ in range(4)]
    try:
        await asyncio.gather(*(create_tables(engine) for engine in engines))
        async with SQLAlchemySession("a", engine=engines[0]) as session:
            await session.add_items([{"role": "user", "content": "hi"}])
        async with SQLAlchemySession("a", engine=engines[3]) as other:
            assert len(await other.get_items()) == 1
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_path_or_url_works_too(backend: Backend) -> None:
    if backend.name == "sqlite-memory":
        return  # a private in-memory database would vanish with the call
    await create_tables(backend.target)
    assert "convstore_events" in await table_names(backend)


async def test_an_engine_without_tables_is_told_to_create_them_in_the_lifespan(
    backend: Backend,
) -> None:
    """The Sessions guide's FastAPI snippet on a fresh database: a session on an engine
    handed in (create_tables=False, as in the SDK) names the start-up fix first."""
    engine = await make_engine(backend)
    try:
        async with SQLAlchemySession("a", engine=engine) as session:
            with pytest.raises(SchemaError) as refused:
                await session.add_items([{"role": "user", "content": "hi"}])
        message = str(refused.value)
        assert message.startswith("the convstore tables do not exist in this database: ")
        assert "in its lifespan: `await sessions.create_tables(engine)`" in message
        assert "create_tables=True" in message
        assert "'convstore DB init'" in message
        # Nothing was created by the refused call; the fix it names works.
        await create_tables(engine)
        async with SQLAlchemySession("a", engine=engine) as session:
            await session.add_items([{"role": "user", "content": "hi"}])
            assert len(await session.get_items()) == 1
    finally:
        await engine.dispose()


async def test_a_url_without_tables_is_told_to_pass_create_tables(shared_backend: Backend) -> None:
    url = shared_backend.target
    if shared_backend.name == "sqlite-file":
        url = f"sqlite:///{url}"
    async with SQLAlchemySession("a", db_url=url) as session:
        with pytest.raises(SchemaError) as refused:
            await session.get_items()
    message = str(refused.value)
    assert message.endswith("open it with create_tables=True (or run 'convstore DB init') first")
    assert "lifespan" not in message  # a session that owns its engine has no start-up hook

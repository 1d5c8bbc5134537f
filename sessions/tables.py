"""Creating convstore's tables when an application starts.

Sessions built on an engine (``SQLAlchemySession(..., engine=engine)``) expect the
tables to exist, as the SDK's do with ``create_tables=False``. An application that
shares one engine creates them once, at start-up::

    engine = create_async_engine("postgresql+asyncpg://...")
    await create_tables(engine)
"""

from __future__ import annotations

import os

from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import EventStore


async def create_tables(target: AsyncEngine | str | os.PathLike[str]) -> None:
    """Create the log and every installed projection's tables where they are missing.

    ``target`` is an ``AsyncEngine`` (used, never disposed), a SQLAlchemy URL or a
    SQLite path. Safe to call at every start and from several processes at once: what
    exists is checked, not recreated, and a projection that is behind the log is caught
    up.
    """
    store = EventStore(target, create_tables=True)
    try:
        await store.ensure_tables()
    finally:
        await store.close()

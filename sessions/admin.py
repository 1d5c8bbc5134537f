"""What the ``convstore`` command does, as functions that scripts can import."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import MAIN_BRANCH, EventStore, RecordedEvent, decode_item
from projections import fold, rebuild, verify
from projections.maintenance import VerifyReport

from .base import HISTORY


def open_store(db: str | os.PathLike[str] | AsyncEngine) -> EventStore:
    """A store on an existing convstore database (tables are not created)."""
    return EventStore(db, create_tables=False, projectors=[HISTORY])


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One session: its log length, items on the main branch, and when it was written."""

    session_id: str
    version: int
    items: int
    created_at: datetime
    updated_at: datetime


async def list_sessions(store: EventStore) -> list[SessionSummary]:
    """Every session, by id."""
    t = HISTORY.items
    query = (
        select(t.c.stream_id, func.count())
        .where(t.c.branch_id == MAIN_BRANCH)
        .group_by(t.c.stream_id)
    )
    counts: dict[str, int] = await store.run(
        lambda conn: {stream_id: count for stream_id, count in conn.execute(query)}
    )
    return [
        SessionSummary(
            s.stream_id, s.version, counts.get(s.stream_id, 0), s.created_at, s.updated_at
        )
        for s in await store.list_streams()
    ]


async def session_log(store: EventStore, session_id: str) -> list[RecordedEvent]:
    """Every event of one session, oldest first."""
    return await store.read_stream(session_id)


async def session_history(
    store: EventStore,
    session_id: str,
    *,
    branch: str = MAIN_BRANCH,
    as_of: int | None = None,
) -> list[Any]:
    """The items of a session's branch now, or as they were at version ``as_of``.

    The present is read from the projection; the past is folded from the log.
    """
    if as_of is None:
        rows = await store.run(lambda conn: HISTORY.read_items(conn, session_id, branch, None))
    else:
        rows = fold(await store.read_stream(session_id, upto=as_of)).items(branch)
    return [decode_item(row) for row in rows]


async def replay(store: EventStore, *, progress: Callable[[int], None] | None = None) -> int:
    """Rebuild every projection from the log; return the number of events replayed."""
    return await rebuild(store, progress=progress)


async def verify_projections(
    store: EventStore, *, progress: Callable[[int], None] | None = None
) -> VerifyReport:
    """Rebuild into scratch tables and compare with the live projections."""
    return await verify(store, progress=progress)

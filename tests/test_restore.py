"""What docs/operations.md says about restoring a PostgreSQL log into another cluster.

Positions on PostgreSQL are transaction ids shifted left by 20 bits. A log restored
(pg_dump) from a cluster whose transaction counter was ahead of the target's holds
positions above the ones the target hands out: simulated here by raising every stored
position by 2**50, as if the source cluster had run 2**30 more transactions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from eventstore import EventStore
from sessions import StoreSession
from sessions.admin import audit_database
from sessions.base import HISTORY

from .conftest import make_backend, reset_server_database

pytestmark = pytest.mark.postgres

# The check docs/operations.md gives, word for word.
AHEAD = text(
    "SELECT coalesce(max(position), 0) >> 20 >= pg_current_xact_id()::text::bigint "
    "FROM convstore_events"
)


async def test_a_log_restored_ahead_of_the_cluster_is_caught(tmp_path: Path) -> None:
    backend = await make_backend("postgres", tmp_path)
    try:
        store: EventStore = backend.store(projectors=(HISTORY,))
        session = StoreSession("restored", store)
        await session.add_items([{"role": "user", "content": "before the backup"}])
        assert await store.run(lambda conn: conn.execute(AHEAD).scalar_one()) is False

        await store.run(
            lambda conn: conn.execute(
                text("UPDATE convstore_events SET position = position + (1::bigint << 50)")
            ),
            write=True,
        )
        assert await store.run(lambda conn: conn.execute(AHEAD).scalar_one()) is True

        await session.add_items([{"role": "user", "content": "after the restore"}])
        positions = [e.position for e in await store.read_stream("restored")]
        assert positions[-1] < positions[-2]  # the new event lands below the restored ones
        report = await audit_database(store)
        assert not report.ok
        assert any("events were reordered" in str(f) for f in report.findings)
    finally:
        await backend.close()
        await reset_server_database(backend.target)  # leave no log ahead of the cluster

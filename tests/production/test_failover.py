"""Failover: the primary dies under load, the standby is promoted and PgBouncer is
pointed at it (``RELOAD``), so the application keeps its URL and its store.

* synchronous replication (``synchronous_standby_names``, ``synchronous_commit=on``):
  nothing acknowledged is lost, and ``audit`` is clean on the promoted database;
* asynchronous replication: what the standby had not received when the primary died
  is lost, acknowledged or not. The window is measured: the standby is stopped for a
  second of writes before the primary is killed, and those acknowledged writes are
  counted as missing on the promoted database (which still passes ``audit``: it holds
  a consistent earlier state). Under ``CONVSTORE_LONG_TESTS=1`` the primary is also
  killed while the standby streams normally, and the loss counted.

Each test builds a cluster of its own (promotion changes its shape).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from eventstore import EventStore
from sessions import admin

from ..reliability._figures import record
from ..reliability._support import LONG
from ._load import Load, recovery, start
from .cluster import Cluster
from .conftest import build_cluster, new_database


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    made = build_cluster()
    yield made
    made.stop()


def fail_over(cluster: Cluster, timing: dict[str, float]) -> None:
    """Kill the primary, promote the standby, send PgBouncer's clients to it."""
    started = time.monotonic()
    if cluster.primary.running():
        cluster.primary.stop("immediate")
    if not cluster.standby.running():
        cluster.standby.start()
    cluster.promote_standby()
    timing["promoted_s"] = time.monotonic() - started
    cluster.point_bouncer(cluster.standby.port)
    timing["repointed_s"] = time.monotonic() - started


KILLS = [pytest.param("standby-stopped", id="standby-stopped")]
if LONG:
    KILLS.append(pytest.param("streaming", id="streaming"))


async def kill_under_load(
    cluster: Cluster, url: str, case: str, *, synchronous: bool
) -> tuple[Load, dict[str, float]]:
    """Eight tasks write through ``url`` (PgBouncer); with ``standby-stopped`` the
    standby is stopped for a second of writes; then the primary is killed and the
    standby promoted, and the load goes on until every task has written to the
    promoted server."""
    timing: dict[str, float] = {}
    async with EventStore(url) as store:
        await store.ensure_tables()
        load = Load(store, case, strict_reads=synchronous)
        running = await start(load, 1.0)
        cut = time.monotonic()
        if case == "standby-stopped":
            await asyncio.to_thread(cluster.standby.stop, "fast")
            await asyncio.sleep(1.0)  # the standby receives nothing of this second
        crash = time.monotonic()
        await asyncio.to_thread(fail_over, cluster, timing)
        await recovery(load, crash)
        load.stop.set()
        await running
        load.check_definite()
        timing["no_write_acknowledged_s"] = load.longest_pause()
    timing["cut"], timing["crash"] = cut, crash
    return load, timing


@pytest.mark.parametrize("case", KILLS)
async def test_synchronous_replication_loses_nothing(own_cluster: Cluster, case: str) -> None:
    """With the standby stopped, commits wait for it instead of being acknowledged; those
    in flight when the primary dies end with an unknown outcome, which the store's
    idempotent retry settles on the promoted server."""
    cluster = own_cluster
    cluster.set_synchronous(True)
    database = new_database(cluster)
    load, timing = await kill_under_load(cluster, database.pooled, case, synchronous=True)
    async with EventStore(cluster.standby.url(database.name)) as promoted:
        assert await load.missing(promoted) == []
        report = await admin.audit_database(promoted)
        assert report.ok, report
    figures = {
        "case": case,
        **{k: round(v, 3) for k, v in timing.items() if k not in ("cut", "crash")},
        "calls": dict(load.outcomes()),
    }
    print("synchronous failover:", figures)
    record("failover_sync", **figures)


@pytest.mark.parametrize("case", KILLS)
async def test_asynchronous_replication_window(own_cluster: Cluster, case: str) -> None:
    cluster = own_cluster
    database = new_database(cluster)
    load, timing = await kill_under_load(cluster, database.pooled, case, synchronous=False)
    async with EventStore(cluster.standby.url(database.name)) as promoted:
        lost = await load.missing(promoted)
        report = await admin.audit_database(promoted)
        assert report.ok, report
    cut, crash = timing.pop("cut"), timing.pop("crash")
    in_window = [
        a.content for a in load.attempts if a.outcome == "done" and cut <= a.ended <= crash
    ]
    if case == "standby-stopped":
        assert lost, "writes the standby never received survived the failover?"
        # Only writes of the window (or in flight as it began) are lost.
        assert set(lost) <= {
            a.content for a in load.attempts if a.outcome == "done" and a.ended >= cut
        }
    figures = {
        "case": case,
        "lost_acknowledged": len(lost),
        "acknowledged_in_window": len(in_window),
        "window_s": round(crash - cut, 3),
        "reads_missing_own_write": load.stale_reads,
        **{k: round(v, 3) for k, v in timing.items()},
        "calls": dict(load.outcomes()),
    }
    print("asynchronous failover:", figures)
    record("failover_async", **figures)

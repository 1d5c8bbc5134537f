"""The primary restarted (``pg_ctl restart -m fast`` and ``-m immediate``) while eight
tasks write and read, directly and through PgBouncer.

Every call answers (done, or a typed error saying whether it committed), nothing
acknowledged is lost, nothing said not to be committed is stored, and the same store
carries on after the restart without the application doing anything: its pool
replaces the dead connections and the store retries where that is safe. The time to
recover is recorded (``CONVSTORE_FIGURES``), never asserted.
"""

from __future__ import annotations

import time

import pytest

from eventstore import EventStore
from sessions import admin

from ..reliability._figures import record
from ..reliability._support import LONG
from ._load import Load, run_while
from .cluster import Cluster
from .conftest import Database

VARIANTS = [
    pytest.param("fast", "direct", id="fast-direct"),
    pytest.param("immediate", "pooled", id="immediate-pgbouncer"),
]
if LONG:
    VARIANTS += [
        pytest.param("immediate", "direct", id="immediate-direct"),
        pytest.param("fast", "pooled", id="fast-pgbouncer"),
    ]


@pytest.mark.parametrize(("mode", "via"), VARIANTS)
async def test_a_restart_under_load(
    cluster: Cluster, database: Database, mode: str, via: str
) -> None:
    url = database.direct if via == "direct" else database.pooled
    timing: dict[str, float] = {}

    def restart() -> None:
        started = time.monotonic()
        cluster.primary.stop(mode)
        cluster.primary.start()
        timing["restart"] = time.monotonic() - started

    async with EventStore(url) as store:
        await store.ensure_tables()
        load = Load(store, f"restart-{mode}-{via}")
        await run_while(load, restart, before=1.0)
        load.check_definite()
        assert await load.missing(store) == []
        report = await admin.audit_database(store)
        assert report.ok, report
    cluster.wait_streaming()  # (the standby reconnects for the next tests)
    outcomes = load.outcomes()
    figures = {
        "mode": mode,
        "via": via,
        "restart_s": round(timing["restart"], 3),
        "no_write_acknowledged_s": round(load.longest_pause(), 3),
        "longest_call_s": round(max(a.ended - a.started for a in load.attempts), 3),
        "calls": dict(outcomes),
        "reads": load.reads,
        "failed_reads": load.failed_reads,
    }
    print("restart:", figures)
    record("restart", **figures)

"""8 processes x 8 tasks: on 64 sessions, and all on one session mixing add, pop and
clear. Nothing is lost, duplicated or popped twice; the projections equal a replay.

``CONVSTORE_LONG_TESTS=1`` raises the operations per task from 4 to 25.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sessions import StoreSession
from sessions.base import HISTORY

from ..conftest import Backend
from ._figures import record
from ._support import audit, sized

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 8
TASKS = 8


def key(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


def run_processes(backend: Backend, ops: int, sessions: str) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reliability._writer",
                "mixed",
                backend.name,
                backend.target,
                str(p),
                str(ops),
                sessions,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


@pytest.mark.parametrize("sessions", ["many", "one"])
async def test_processes_and_tasks_lose_nothing(shared_backend: Backend, sessions: str) -> None:
    store = shared_backend.store(projectors=(HISTORY,))
    await store.ensure_tables()
    ops = sized(4, 25)
    results = await asyncio.to_thread(run_processes, shared_backend, ops, sessions)
    added = [item for r in results for batch in r["added"] for item in batch]
    popped = [item for r in results for item in r["popped"] if item is not None]
    assert len(set(map(key, added))) == len(added)
    left = {
        info.stream_id: await StoreSession(info.stream_id, store).get_items()
        for info in await store.list_streams()
    }
    if sessions == "many":
        assert len(left) == PROCESSES * TASKS
        for sid, items in left.items():  # each task's adds, whole and in its order
            w, t = (int(x) for x in sid[1:].split("t"))
            expected = [
                i
                for r in results
                for batch in r["added"]
                for i in batch
                if i["w"] == w and i["t"] == t
            ]
            assert items == expected, sid
    else:
        final = left["one"]
        assert len(set(map(key, popped))) == len(popped), "an item was popped twice"
        assert len(set(map(key, final))) == len(final), "an item is stored twice"
        assert set(map(key, popped)) <= set(map(key, added))
        assert set(map(key, final)) <= set(map(key, added))
        assert not set(map(key, final)) & set(map(key, popped)), "popped but still there"
        log = await store.read_stream("one")
        types = Counter(e.event_type for e in log)
        assert types["ItemPopped"] == len(popped)
        assert types["SessionCleared"] == sum(r["cleared"] for r in results)
        if not types["SessionCleared"]:  # nothing cleared: every item is accounted for
            assert sorted(map(key, final + popped)) == sorted(map(key, added))
        # every acknowledged add is in the log, once
        logged = Counter(
            key(item)
            for e in log
            if e.event_type == "ItemsAdded"
            for item in json.loads(e.payload)["items"]
        )
        assert all(logged[key(i)] == 1 for i in added)
    events = await audit(store)
    operations = sum(len(r["added"]) + len(r["popped"]) + r["cleared"] for r in results)
    record(
        "many_writers",
        backend=shared_backend.name,
        sessions=sessions,
        operations=operations,
        items_added=len(added),
        items_popped=len(popped),
        events_audited=events,
    )

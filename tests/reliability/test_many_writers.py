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

from eventstore import RecordedEvent
from projections.history import item_seq
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


def list_model(log: list[RecordedEvent]) -> tuple[list[Any], list[Any], list[Any]]:
    """The items a plain list holds after the log's adds, pops and clears, in log
    order, and the items it popped and cleared. A pop must take the list's last item
    (the ``seq`` the event names)."""
    items: list[tuple[int, Any]] = []
    popped: list[Any] = []
    cleared: list[Any] = []
    for event in log:
        body = json.loads(event.payload)
        if event.event_type == "ItemsAdded":
            items += [(item_seq(event.version, i), item) for i, item in enumerate(body["items"])]
        elif event.event_type == "ItemPopped":
            assert items, f"v{event.version} pops an empty session"
            seq, item = items.pop()
            assert body["seq"] == seq, f"v{event.version} pops {body['seq']}, the last is {seq}"
            popped.append(item)
        elif event.event_type == "SessionCleared":
            cleared += [item for _, item in items]
            items = []
    return [item for _, item in items], popped, cleared


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
        assert types["SessionCleared"], "the seeded operations clear the session"
        # A plain list run through the log in its order: the session must hold what it
        # holds, each pop must have returned the item the list popped, and every
        # acknowledged add is left, popped or cleared, exactly once.
        model_left, model_popped, model_cleared = list_model(log)
        assert list(map(key, final)) == list(map(key, model_left)), "items lost or extra"
        assert Counter(map(key, popped)) == Counter(map(key, model_popped))
        accounted = model_left + model_popped + model_cleared
        assert sorted(map(key, accounted)) == sorted(map(key, added))
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

"""Concurrent writers on one session: asyncio tasks and OS processes lose, duplicate and
reorder nothing, and concurrent pops never hand out one item twice.

The process workers are top-level functions run under the ``spawn`` start method, so
this module imports nothing heavy at module level: a child imports it to find them.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

    from sessions import StoreSession

    from ..conftest import Backend
    from .conftest import Sessions

PROCESS_TIMEOUT = 120.0


def key(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


def assert_each_writer_in_order(items: list[dict[str, int]], writers: int, count: int) -> None:
    assert len(items) == writers * count
    assert len({key(i) for i in items}) == len(items), "an item was duplicated"
    for w in range(writers):
        assert [i["n"] for i in items if i["w"] == w] == list(range(count)), f"writer {w}"


# -- asyncio tasks -----------------------------------------------------------------------


async def test_concurrent_adders_lose_nothing(session: StoreSession) -> None:
    async def writer(w: int) -> None:
        for n in range(20):
            await session.add_items([{"w": w, "n": n}])

    await asyncio.gather(*(writer(w) for w in range(10)))
    assert_each_writer_in_order(await session.get_items(), writers=10, count=20)
    events = await session.store.read_stream(session.session_id)
    assert Counter(e.event_type for e in events) == {"SessionStarted": 1, "ItemsAdded": 200}


async def test_eight_tasks_adding_at_once_keep_every_item_once_in_order(
    session: StoreSession,
) -> None:
    """Adds that arrive while another is being written are written together (one
    transaction per group): each task's items still land once each and in its order,
    and the log passes the full audit."""
    from projections import verify
    from sessions.admin import audit_database

    tasks, count = 8, 40

    async def writer(w: int) -> None:
        for n in range(count):
            await session.add_items([{"w": w, "n": n}])

    await asyncio.gather(*(writer(w) for w in range(tasks)))
    assert_each_writer_in_order(await session.get_items(), writers=tasks, count=count)
    events = await session.store.read_stream(session.session_id)
    assert Counter(e.event_type for e in events) == {
        "SessionStarted": 1,
        "ItemsAdded": tasks * count,
    }
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    report = await audit_database(session.store)
    assert report.ok, [str(f) for f in report.findings]
    verified = await verify(session.store)
    assert verified.ok, str(verified)


async def test_session_objects_sharing_a_store_start_a_stream_once(session: StoreSession) -> None:
    """One session object per request on one store, the first adds arriving at once on a
    new stream: written together, with exactly one SessionStarted, first."""
    from sessions import StoreSession

    await session.add_items([{"warm": 1}])  # the store is ready: the adds go straight in
    others = [StoreSession("new", session.store) for _ in range(6)]
    await asyncio.gather(*(s.add_items([{"w": w, "n": 0}]) for w, s in enumerate(others)))
    events = await session.store.read_stream("new")
    assert [e.event_type for e in events] == ["SessionStarted"] + ["ItemsAdded"] * 6
    assert await others[0].get_items() == [{"w": w, "n": 0} for w in range(6)]


async def test_concurrent_pops_never_return_one_item_twice(sessions: Sessions) -> None:
    first, second = sessions.open("s"), sessions.open("s")
    items = [{"n": n} for n in range(50)]
    await first.add_items(items)
    popped = await asyncio.gather(*(s.pop_item() for _ in range(30) for s in (first, second)))
    assert popped.count(None) == 10
    taken = [p for p in popped if p is not None]
    assert sorted(taken, key=lambda i: i["n"]) == items
    assert await first.get_items() == []
    assert await second.get_items() == []
    events = await first.store.read_stream("s")
    assert Counter(e.event_type for e in events)["ItemPopped"] == 50


async def test_concurrent_adds_and_pops_agree(sessions: Sessions) -> None:
    adder, popper = sessions.open("s"), sessions.open("s")

    async def add(w: int) -> None:
        for n in range(15):
            await adder.add_items([{"w": w, "n": n}])

    async def pop() -> list[Any]:
        out = []
        for _ in range(15):
            out.append(await popper.pop_item())
            await asyncio.sleep(0)
        return out

    results = await asyncio.gather(*(add(w) for w in range(4)), *(pop() for _ in range(3)))
    taken = [p for batch in results[4:] for p in batch if p is not None]
    left = await adder.get_items()
    assert len({key(i) for i in taken}) == len(taken), "an item was popped twice"
    assert sorted(map(key, taken + left)) == sorted(
        key({"w": w, "n": n}) for w in range(4) for n in range(15)
    )
    for w in range(4):  # what is left of each writer is still in its order
        ns = [i["n"] for i in left if i["w"] == w]
        assert ns == sorted(ns)


# -- OS processes ------------------------------------------------------------------------


def process_worker(
    backend_name: str,
    target: str,
    job: str,
    worker: int,
    barrier: Barrier,
    results: Queue[tuple[int, list[Any]]],
) -> None:
    """Run ``job`` ("add" 50 items one by one, or "pop" until empty) on session "s"."""
    # The worker needs nothing of the Agents SDK; not importing it saves ~2 s a process.
    sys.modules.setdefault("agents", None)  # type: ignore[arg-type]
    results.put((worker, asyncio.run(_work(backend_name, target, job, worker, barrier))))


async def _work(
    backend_name: str, target: str, job: str, worker: int, barrier: Barrier
) -> list[Any]:
    from .conftest import open_session

    session = open_session(backend_name, target, "s")
    try:
        await session.get_items(limit=0)  # connected and the tables ready before the start
        barrier.wait(PROCESS_TIMEOUT)
        if job == "add":
            for n in range(50):
                await session.add_items([{"w": worker, "n": n}])
            return []
        popped = []
        while (item := await session.pop_item()) is not None:
            popped.append(item)
        return popped
    finally:
        await session.close()


def run_processes(backend: Backend, job: str, count: int) -> dict[int, list[Any]]:
    """Start ``count`` workers together; their results by worker number."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    results: Queue[tuple[int, list[Any]]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=process_worker,
            args=(backend.name, backend.target, job, w, barrier, results),
            daemon=True,
        )
        for w in range(count)
    ]
    for p in procs:
        p.start()
    try:
        out = dict(results.get(timeout=PROCESS_TIMEOUT) for _ in procs)
    finally:
        for p in procs:
            p.join(PROCESS_TIMEOUT)
    assert [p.exitcode for p in procs] == [0] * count
    return out


async def test_processes_adding_to_one_session(shared_backend: Backend) -> None:
    await asyncio.to_thread(run_processes, shared_backend, "add", 4)
    from .conftest import Sessions

    opened = Sessions(shared_backend)
    try:
        session = opened.open("s")
        assert_each_writer_in_order(await session.get_items(), writers=4, count=50)
    finally:
        await opened.close()


async def test_processes_popping_from_one_session(shared_backend: Backend) -> None:
    from .conftest import Sessions

    opened = Sessions(shared_backend)
    try:
        session = opened.open("s")
        items = [{"n": n} for n in range(90)]
        await session.add_items(items)
        popped = await asyncio.to_thread(run_processes, shared_backend, "pop", 3)
        taken = [item for batch in popped.values() for item in batch]
        assert len({key(i) for i in taken}) == len(taken), "an item was popped twice"
        assert sorted(taken, key=lambda i: i["n"]) == items
        assert await session.get_items() == []
    finally:
        await opened.close()

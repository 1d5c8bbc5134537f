"""SQLite's runner: quick work skips the thread handoff without ever waiting on the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

from eventstore import EventStore, ItemsAdded, decode_item, encode_items


def added(*values: object) -> ItemsAdded:
    return ItemsAdded(items=encode_items(list(values)))


async def test_quick_read_waits_in_the_worker_when_the_file_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with EventStore(path) as store:
        await store.append("s", [added("before the lock")])
    # Another process's exclusive lock: every other connection is told "busy".
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(0.3, lambda: (blocker.rollback(), blocker.close()))
    released.start()
    try:
        async with EventStore(path) as store:
            runner = store._runner
            in_worker: list[bool] = []
            worker_run = runner._run  # type: ignore[attr-defined]

            def spy(fn: Any, write: bool) -> Any:
                in_worker.append(write)
                return worker_run(fn, write)

            runner._run = spy  # type: ignore[attr-defined]
            # The quick read on the loop's thread is told "busy" at once and hands
            # the read to the worker, which waits for the lock instead of failing.
            info = await store.stream_info("s")
            assert in_worker == [False]
    finally:
        released.join()
    assert info is not None
    assert info.version == 1


async def test_unlocked_quick_read_skips_the_worker(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "free.db") as store:
        await store.append("s", [added("x")])
        store._runner._run = None  # type: ignore[attr-defined]  # any use of the worker fails
        info = await store.stream_info("s")
        assert info is not None
        assert info.version == 1


async def test_memory_quick_work_and_worker_work_take_turns() -> None:
    async with EventStore(":memory:") as store:
        await store.append("big", [added(*range(500)) for _ in range(40)])
        # read_all runs in the worker (not quick) while quick appends run on the loop's
        # thread whenever the worker is idle: none may see the other half-done.
        reads = [asyncio.create_task(store.read_all()) for _ in range(3)]
        writes = [asyncio.create_task(store.append(f"w{n}", [added(n)])) for n in range(50)]
        logs = await asyncio.gather(*reads)
        await asyncio.gather(*writes)
        for log in logs:
            assert [e.position for e in log] == list(range(1, len(log) + 1))
            assert len(log) >= 40
        final = await store.read_all()
        assert len(final) == 90
        assert sorted(decode_item(e.event.items[0]) for e in final[40:]) == list(range(50))  # type: ignore[union-attr]

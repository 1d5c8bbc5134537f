"""SQLite's runner: quick work skips the thread handoff without ever waiting on the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from eventstore import ConcurrencyError, EventStore, ItemsAdded, decode_item, encode_items

from .chain_check import assert_chain_valid


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


async def test_waiting_writes_share_one_commit_and_fail_alone(tmp_path: Path) -> None:
    """Group commit: a write that fails is rolled back alone; the others commit together."""
    async with EventStore(tmp_path / "group.db") as store:
        await store.append("taken", [added("first")])
        runner = store._runner
        sizes: list[int] = []
        commit_group = runner._commit_group  # type: ignore[attr-defined]

        def spy(group: list[Any]) -> None:
            sizes.append(len(group))
            commit_group(group)

        runner._commit_group = spy  # type: ignore[attr-defined]
        release = threading.Event()

        def hold_the_worker(conn: Any) -> None:
            assert release.wait(10)

        def write_then_fail(conn: Any) -> None:
            conn.exec_driver_sql("UPDATE convstore_head SET position = position + 1000")
            raise RuntimeError("this write changes its mind")

        holder = asyncio.create_task(store.run(hold_the_worker, write=True))
        await asyncio.sleep(0.05)  # the worker is now inside the holder's transaction
        good = [asyncio.create_task(store.append(f"g{n}", [added(n)])) for n in range(6)]
        conflict = asyncio.create_task(store.append("taken", [added("x")], expected_version=0))
        failing = asyncio.create_task(store.run(write_then_fail, write=True))
        more = [asyncio.create_task(store.append(f"h{n}", [added(n)])) for n in range(3)]
        await asyncio.sleep(0.05)
        release.set()
        await holder
        results = await asyncio.gather(*good, *more)
        with pytest.raises(ConcurrencyError):
            await conflict
        with pytest.raises(RuntimeError, match="changes its mind"):
            await failing
        assert sizes == [1, 11]  # the holder alone, then everything that waited for it
        log = await store.read_all()
        assert [e.position for e in log] == list(range(1, 11))  # the failed write left nothing
        assert await store.head_position() == 10
        assert sorted(r.stream_id for r in results) == sorted(
            [f"g{n}" for n in range(6)] + [f"h{n}" for n in range(3)]
        )
        assert [e.version for e in await store.read_stream("taken")] == [1]


async def test_many_writers_on_one_file_lose_nothing(tmp_path: Path) -> None:
    async with EventStore(tmp_path / "many.db") as store:
        await store.ensure_tables()

        async def writer(w: int) -> None:
            for n in range(25):
                await store.append("shared", [added([w, n])])

        await asyncio.gather(*(writer(w) for w in range(20)))
        events = await store.read_stream("shared")
        assert [e.version for e in events] == list(range(1, 501))
        seen = [decode_item(e.event.items[0]) for e in events]  # type: ignore[union-attr]
        for w in range(20):
            assert [n for writer_, n in seen if writer_ == w] == list(range(25))
        assert_chain_valid(events)

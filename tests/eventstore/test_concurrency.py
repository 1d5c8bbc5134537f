"""Guarantees under several OS processes writing at once, and under a killed writer."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import signal
import time
from typing import Any

from eventstore import ConcurrencyError, EventStore, ItemsAdded, decode_item, encode_items

from ..conftest import Backend
from .chain_check import assert_chain_valid
from .positions import assert_positions

WRITERS = 4
APPENDS_PER_WRITER = 250

_spawn = multiprocessing.get_context("spawn")


def added(value: Any) -> ItemsAdded:
    return ItemsAdded(items=encode_items([value]))


# -- one stream, four processes, optimistic concurrency ---------------------------------


def _append_with_retry(target: str, writer: int, count: int, start: Any, conflicts: Any) -> None:
    async def main() -> None:
        refused = 0
        async with EventStore(target) as store:
            info = await store.stream_info("shared")
            version = info.version if info else 0
            # Every writer has read the version (0) before any appends: at most one of
            # the first appends can expect the right one.
            start.wait(120)
            for n in range(count):
                while True:
                    try:
                        result = await store.append(
                            "shared", [added([writer, n])], expected_version=version
                        )
                    except ConcurrencyError as conflict:
                        refused += 1
                        version = conflict.actual
                        continue
                    version = result.last_version
                    break
        conflicts.put(refused)

    asyncio.run(main())


async def test_four_processes_append_to_one_stream(shared_backend: Backend) -> None:
    await shared_backend.store().ensure_tables()
    start = _spawn.Barrier(WRITERS)
    conflicts = _spawn.Queue()
    args = [
        (shared_backend.target, w, APPENDS_PER_WRITER, start, conflicts) for w in range(WRITERS)
    ]
    processes = [_spawn.Process(target=_append_with_retry, args=a) for a in args]
    for process in processes:
        process.start()
    refused: list[int] = []
    deadline = time.monotonic() + 300
    while len(refused) < WRITERS and time.monotonic() < deadline:
        try:
            refused.append(conflicts.get(timeout=1))
        except queue.Empty:
            assert all(p.exitcode in (None, 0) for p in processes), [p.exitcode for p in processes]
    for process in processes:
        process.join(300)
    assert [p.exitcode for p in processes] == [0] * WRITERS
    # The barrier makes the first appends race on version 0: all but one are refused.
    assert sum(refused) >= WRITERS - 1, refused

    store = shared_backend.store()
    events = await store.read_stream("shared")
    total = WRITERS * APPENDS_PER_WRITER
    assert [e.version for e in events] == list(range(1, total + 1))
    assert_positions(store, [e.position for e in events])  # by version: commit order
    written = [decode_item(e.event.items[0]) for e in events]  # type: ignore[union-attr]
    assert sorted(map(tuple, written)) == [
        (w, n) for w in range(WRITERS) for n in range(APPENDS_PER_WRITER)
    ]
    for w in range(WRITERS):  # each writer's own events in its own order
        assert [n for writer, n in written if writer == w] == list(range(APPENDS_PER_WRITER))
    assert (await store.stream_info("shared")).version == total  # type: ignore[union-attr]


# -- a reader tailing the log never sees a gap filled later -----------------------------


def _append_blindly(target: str, writer: int, count: int) -> None:
    async def main() -> None:
        async with EventStore(target) as store:
            for n in range(count):
                await store.append(f"writer-{writer}-{n % 5}", [added(n)])

    asyncio.run(main())


async def test_tailing_reader_never_sees_a_gap(shared_backend: Backend) -> None:
    store = shared_backend.store()
    await store.ensure_tables()
    per_writer = 150
    total = WRITERS * per_writer
    processes = [
        _spawn.Process(target=_append_blindly, args=(shared_backend.target, w, per_writer))
        for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    seen: list[int] = []
    deadline = time.monotonic() + 300
    polls = 0
    while len(seen) < total and time.monotonic() < deadline:
        page = await store.read_all(after_position=seen[-1] if seen else 0)
        polls += 1
        # Commit-ordered positions: what is visible follows on from what was read (on a
        # gapless backend without a hole), so resuming after the last position read
        # can never skip an event; the end result below proves nothing was skipped.
        assert_positions(store, [e.position for e in page], first=len(seen) + 1)
        assert not seen or not page or page[0].position > seen[-1]
        seen.extend(e.position for e in page)
        if not page:
            await asyncio.sleep(0.001)
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * WRITERS
    assert seen == [e.position for e in await store.read_all()]
    assert len(seen) == total
    assert polls > 1  # the reader really tailed the writers, not just read the end result


# -- a writer killed mid-append leaves whole appends or nothing -------------------------


def _append_batches_forever(target: str, writer: int, ready: Any) -> None:
    async def main() -> None:
        big = "x" * 2_000
        async with EventStore(target) as store:
            n = 0
            while True:
                await store.append(f"victim-{writer}", [added([n, i, big]) for i in range(50)])
                n += 1
                if n == 3:
                    ready.set()

    asyncio.run(main())


async def test_killed_writers_leave_no_partial_append(shared_backend: Backend) -> None:
    store = shared_backend.store()
    await store.ensure_tables()
    ready = [_spawn.Event() for _ in range(2)]
    processes = [
        _spawn.Process(target=_append_batches_forever, args=(shared_backend.target, w, ready[w]))
        for w in range(2)
    ]
    for process in processes:
        process.start()
    for event in ready:
        assert event.wait(120)
    await asyncio.sleep(0.05)
    for process in processes:
        os.kill(process.pid or 0, signal.SIGKILL)
        process.join(30)
    assert [p.exitcode for p in processes] == [-signal.SIGKILL] * 2

    log = await store.read_all()
    assert_positions(store, [e.position for e in log])
    assert await store.head_position() == log[-1].position
    assert await store.count_events() == len(log)
    for w in range(2):
        events = await store.read_stream(f"victim-{w}")
        assert len(events) % 50 == 0  # whole appends only
        assert len(events) >= 150
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        batches = [decode_item(e.event.items[0])[:2] for e in events]  # type: ignore[union-attr]
        assert batches == [[n, i] for n in range(len(events) // 50) for i in range(50)]
        assert_chain_valid(events)
        assert (await store.stream_info(f"victim-{w}")).version == len(events)  # type: ignore[union-attr]
    # The log takes appends again at once: nothing was left locked by the dead writers.
    result = await store.append("after", [added("alive")])
    assert_positions(store, [e.position for e in log] + [result.last_position])

"""A writer paused inside an append must not stop other sessions.

A separate process appends to one stream and stops inside the append transaction
as late as a client can stop in it, before the commit (where a GC pause, SIGSTOP or a
network partition would leave it). Meanwhile this process appends to other streams:
they all commit, and a reader tailing the log by position skips nothing.

* PostgreSQL: the paused append has taken its position and written its event; the
  reader sees none of the others until the paused append has ended, then all of
  them, the paused one first.
* MariaDB: the paused append has locked its stream and written its projections; its
  positions are taken by the statement that commits, which the server runs whole, so
  the others are numbered and readable at once, and the paused one comes after them.
* SQLite has one writer at a time by design (a waiting writer gets LockTimeoutError,
  see tests/reliability).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import pytest
from sqlalchemy import Connection

from eventstore import EventStore, ItemsAdded, encode_items

from ..conftest import Backend, make_engine
from .positions import assert_positions

_spawn = multiprocessing.get_context("spawn")
OTHER_STREAMS = 20


def added(value: Any) -> ItemsAdded:
    return ItemsAdded(items=encode_items([value]))


def _pause_inside_append(target: str, paused: Any, release: Any) -> None:
    async def main() -> None:
        # No idle-in-transaction limit: the server must not end this stall for us.
        async with EventStore(target, idle_in_transaction_timeout=None) as store:
            await store.ensure_tables()
            dialect: Any = store._dialect
            write, commit = store._writer._write_tx, getattr(dialect, "commit_append", None)

            def pause() -> None:
                paused.set()
                release.wait(120)  # the transaction stays open, uncommitted

            def write_then_pause(conn: Connection, *args: Any) -> Any:
                result = write(conn, *args)  # positions taken, event and projections written
                pause()
                return result

            def pause_then_commit(conn: Connection, **values: Any) -> Any:
                pause()  # stream locked, projections written; the last statement is next
                return commit(conn, **values)

            if store.dense_positions:  # MariaDB: positions are taken as it commits
                dialect.commit_append = pause_then_commit
            else:
                store._writer._write_tx = write_then_pause  # type: ignore[method-assign]
            await store.append("paused", [added("paused")])

    asyncio.run(main())


async def test_a_paused_writer_does_not_stop_other_sessions(shared_backend: Backend) -> None:
    if shared_backend.name.startswith("sqlite"):
        pytest.skip(
            f"{shared_backend.name}: one writer at a time by design (see tests/reliability)"
        )
    store = shared_backend.store()
    await store.append("before", [added("before")])
    before = await store.read_all()
    paused, release = _spawn.Event(), _spawn.Event()
    writer = _spawn.Process(
        target=_pause_inside_append, args=(shared_backend.target, paused, release)
    )
    writer.start()
    try:
        assert await asyncio.to_thread(paused.wait, 120)

        async def others() -> list[int]:
            results = [await store.append(f"other-{n}", [added(n)]) for n in range(OTHER_STREAMS)]
            return [r.last_position for r in results]

        # Guarded so that a regression fails rather than hangs; no time is asserted.
        positions = await asyncio.wait_for(others(), 120)
        assert writer.is_alive()  # still paused inside its transaction
        for n in range(OTHER_STREAMS):  # each session reads its own writes at once
            events = await store.read_stream(f"other-{n}")
            assert [e.position for e in events] == [positions[n]]
        tailed = await store.read_all(after_position=before[-1].position)
        if store.dense_positions:  # the paused append has no position yet
            assert [e.position for e in tailed] == positions
        else:  # a tailing reader stops below the paused append: it may still commit there
            assert tailed == []
    finally:
        release.set()
        await asyncio.to_thread(writer.join, 120)
    assert writer.exitcode == 0
    log = await store.read_all(after_position=before[-1].position)
    others = [f"other-{n}" for n in range(OTHER_STREAMS)]
    expected = [*others, "paused"] if store.dense_positions else ["paused", *others]
    assert [e.stream_id for e in log] == expected
    assert_positions(store, [before[-1].position] + [e.position for e in log])


def test_32_bit_transaction_ids_are_placed_in_their_epoch() -> None:
    from eventstore.backends.postgres import _full_xid

    epoch = 7 << 32
    assert _full_xid(1000, epoch + 2000) == epoch + 1000  # older, same epoch
    assert _full_xid(2500, epoch + 2000) == epoch + 2500  # assigned after the snapshot
    assert _full_xid(0xFFFF_FF00, epoch + 10) == epoch - 0x100  # the epoch before
    assert _full_xid(5, epoch - 10) == epoch + 5  # the next epoch


async def test_a_repeatable_read_engine_reads_the_whole_log(shared_backend: Backend) -> None:
    """Its reads share one snapshot, so they fall back to the oldest transaction id."""
    if shared_backend.name != "postgres":
        pytest.skip("PostgreSQL's read horizon")
    engine = (await make_engine(shared_backend)).execution_options(
        isolation_level="REPEATABLE READ"
    )
    try:
        store = EventStore(engine)
        try:
            appended = [(await store.append(f"s{n}", [added(n)])).last_position for n in range(3)]
            # Another database's open transaction may hold the cluster's oldest id
            # back for a while: what is read is always a prefix, and in the end all.
            for _ in range(3000):
                read = [e.position for e in await store.read_all()]
                assert read == appended[: len(read)]
                if read == appended:
                    break
                await asyncio.sleep(0.01)
            assert read == appended
            assert await store.head_position() == appended[-1]
        finally:
            await store.close()
    finally:
        await engine.dispose()

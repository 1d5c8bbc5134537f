"""Subscriptions (eventstore/subscribe.py): each new event once, in order, none skipped,
across processes, resumable, in bounded pages; woken by the backend's notice.

The writers and readers in other processes are tests/eventstore/subscriber_child.py.
No test asserts a time: where a test needs a subscriber to be woken (not polled), its
poll interval is an hour, and the test's only time limit is a guard against hanging.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import pytest

from eventstore import (
    ArgumentTypeError,
    EventStore,
    InvalidArgumentError,
    ItemsAdded,
    RecordedEvent,
    Subscription,
    encode_items,
)

from ..conftest import Backend

REPO = Path(__file__).resolve().parents[2]
# The longest any test waits for something that should come at once (a hang guard).
GUARD = 60.0
HOUR = 3600.0


def added(value: Any) -> ItemsAdded:
    return ItemsAdded(items=encode_items([value]))


class Child:
    """A child process of subscriber_child.py and the lines it printed."""

    def __init__(self, *args: str) -> None:
        self.lines: list[list[str]] = []
        self.seen = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.eventstore.subscriber_child", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if not line.endswith("\n"):  # killed while printing
                break
            with self.seen:
                self.lines.append(line.split())
                self.seen.notify_all()

    async def wait_lines(self, count: int) -> None:
        def wait() -> None:
            with self.seen:
                done = self.seen.wait_for(
                    lambda: len(self.lines) >= count or self.process.poll() is not None, GUARD
                )
            assert done, self.errors()
            assert len(self.lines) >= count, self.errors()

        await asyncio.to_thread(wait)

    def errors(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "still running"
        return self.process.stderr.read()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.finish()
        assert self.process.returncode == -signal.SIGKILL

    def finish(self) -> None:
        self.process.wait(GUARD)
        self._thread.join()
        for pipe in (self.process.stdout, self.process.stderr):
            assert pipe is not None
            pipe.close()


async def collect(subscription: Subscription, count: int) -> list[RecordedEvent]:
    """The first ``count`` events of ``subscription`` (a hang fails after GUARD s)."""
    found: list[RecordedEvent] = []

    async def take() -> None:
        async for event in subscription:
            found.append(event)
            if len(found) == count:
                return

    await asyncio.wait_for(take(), GUARD)
    return found


def keys(events: list[RecordedEvent]) -> list[tuple[int, str, int]]:
    return [(e.position, e.stream_id, e.version) for e in events]


@pytest.fixture
async def store(shared_backend: Backend) -> AsyncIterator[EventStore]:
    made = shared_backend.store()
    await made.ensure_tables()
    return made


async def test_every_event_of_concurrent_writers_once_in_order(
    shared_backend: Backend, store: EventStore
) -> None:
    """Two writer processes append at once while a subscriber follows the whole log and
    another follows one stream: each sees every event exactly once, in log order."""
    per_writer = 60
    async with (
        store.subscribe(page_size=7) as everything,
        store.subscribe_stream("a0", page_size=3) as one,
    ):
        writers = [Child("write", shared_backend.target, p, "3", str(per_writer)) for p in "ab"]
        seen, stream = await asyncio.gather(collect(everything, 2 * per_writer), collect(one, 20))
        for writer in writers:
            writer.finish()
            assert writer.process.returncode == 0, writer.errors()
    log = await store.read_all()
    assert keys(seen) == keys(log)
    assert [e.version for e in stream] == list(range(1, 21))
    assert keys(stream) == [k for k in keys(log) if k[1] == "a0"]
    acked = {(line[0], int(line[1])) for writer in writers for line in writer.lines}
    assert acked == {(e.stream_id, e.version) for e in seen}


async def test_a_writer_killed_mid_stream(shared_backend: Backend, store: EventStore) -> None:
    """A writer SIGKILLed at any moment (maybe inside an append) leaves the subscriber
    whole: it gets every committed event once and in order, nothing of the killed
    append if it did not commit, and goes on with the next writer's events."""
    async with store.subscribe(page_size=4) as events:
        first = Child("write", shared_backend.target, "k", "2", "0")
        await first.wait_lines(25)
        first.kill()
        second = Child("write", shared_backend.target, "k", "2", "10")
        second.finish()
        assert second.process.returncode == 0, second.errors()
        log = await store.read_all()
        seen = await collect(events, len(log))
    assert keys(seen) == keys(log)
    acked = {(line[0], int(line[1])) for line in first.lines + second.lines}
    assert acked <= {(e.stream_id, e.version) for e in seen}
    for stream in ("k0", "k1"):
        versions = [e.version for e in seen if e.stream_id == stream]
        assert versions == list(range(1, len(versions) + 1))


async def test_a_reader_restarted_resumes_after_its_last_position(
    shared_backend: Backend, store: EventStore
) -> None:
    """A reader in another process is SIGKILLed; one started after the last position it
    printed gets the rest: together, every event once, in order."""
    for n in range(30):
        await store.append(f"r{n % 3}", [added(n)])
    reader = Child("read", shared_backend.target, "0")
    await reader.wait_lines(13)  # "ready" and 12 events
    reader.kill()
    printed = [(int(p), s, int(v)) for p, s, v in reader.lines[1:]]
    for n in range(30, 40):
        await store.append(f"r{n % 3}", [added(n)])
    log = await store.read_all()
    async with store.subscribe(after_position=printed[-1][0]) as rest:
        resumed = await collect(rest, len(log) - len(printed))
    assert printed + keys(resumed) == keys(log)


async def test_reads_in_pages_of_page_size(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber far behind reads the backlog page by page (bounded memory): no read
    asks for more than page_size events, whatever the backlog."""
    store = backend.store()
    for n in range(50):
        await store.append(f"p{n % 2}", [added(n)])
    limits: list[int | None] = []
    read_all, read_stream = store.read_all, store.read_stream

    async def counted_all(**kwargs: Any) -> list[RecordedEvent]:
        limits.append(kwargs.get("limit"))
        return await read_all(**kwargs)

    async def counted_stream(stream_id: str, **kwargs: Any) -> list[RecordedEvent]:
        limits.append(kwargs.get("limit"))
        return await read_stream(stream_id, **kwargs)

    monkeypatch.setattr(store, "read_all", counted_all)
    monkeypatch.setattr(store, "read_stream", counted_stream)
    async with store.subscribe(page_size=6) as events:
        assert events.page_size == 6
        assert len(await collect(events, 50)) == 50
    assert limits
    assert set(limits) == {6}
    assert len(limits) == 9  # ceil(50 / 6): the backlog, a page at a time
    limits.clear()
    async with store.subscribe_stream("p1", page_size=4) as events:
        assert [e.version for e in await collect(events, 25)] == list(range(1, 26))
    assert set(limits) == {4}
    assert len(limits) == 7


@pytest.mark.parametrize("scope", ["log", "stream"])
async def test_another_process_wakes_the_subscriber(
    shared_backend: Backend, store: EventStore, scope: str
) -> None:
    """With a poll interval of an hour, an append by another process still arrives:
    PostgreSQL's NOTIFY or SQLite's data version wakes the subscriber. (MariaDB has no
    such notice: its subscribers poll.)"""
    if shared_backend.name == "mysql":
        pytest.skip("MariaDB subscribers poll: nothing wakes them across processes")
    if scope == "log":
        subscription = store.subscribe(poll_interval=HOUR)
    else:
        subscription = store.subscribe_stream("w0", poll_interval=HOUR)
    async with subscription as events:
        waiting = asyncio.ensure_future(collect(events, 3))
        await asyncio.sleep(0.2)  # the subscriber has read, found nothing, and waits
        assert not waiting.done()
        writer = Child("write", shared_backend.target, "w", "1", "3")
        seen = await waiting
        writer.finish()
    assert [(e.stream_id, e.version) for e in seen] == [("w0", 1), ("w0", 2), ("w0", 3)]


async def test_polling_alone_without_listen(shared_backend: Backend, store: EventStore) -> None:
    """listen=False (a pooler in transaction mode drops LISTEN): polling alone delivers
    another process's events."""
    async with store.subscribe(poll_interval=0.05, listen=False) as events:
        writer = Child("write", shared_backend.target, "n", "2", "4")
        seen = await collect(events, 4)
        writer.finish()
    assert sorted((e.stream_id, e.version) for e in seen) == [
        ("n0", 1),
        ("n0", 2),
        ("n1", 1),
        ("n1", 2),
    ]


async def test_an_append_of_this_process_wakes_the_subscriber(backend: Backend) -> None:
    """Every backend, a private in-memory SQLite database included: this process's own
    appends (through any store on the database) wake its subscribers at once."""
    reader = backend.store()
    writer = reader if backend.name == "sqlite-memory" else backend.store()
    await writer.ensure_tables()
    async with (
        reader.subscribe(poll_interval=HOUR) as everything,
        reader.subscribe_stream("s", poll_interval=HOUR) as one,
    ):
        waiting = asyncio.gather(collect(everything, 2), collect(one, 1))
        await asyncio.sleep(0.1)
        await writer.append("t", [added("t")])
        await writer.append("s", [added("s")])
        seen, stream = await waiting
    assert [e.stream_id for e in seen] == ["t", "s"]
    assert [e.stream_id for e in stream] == ["s"]


async def test_closing_ends_the_iteration(backend: Backend) -> None:
    store = backend.store()
    subscription = store.subscribe(poll_interval=HOUR)
    waiting = asyncio.ensure_future(collect(subscription, 1))
    await asyncio.sleep(0.1)
    await subscription.aclose()
    assert await waiting == []
    assert [e async for e in subscription] == []


async def test_a_stream_subscription_resumes_after_a_version(backend: Backend) -> None:
    store = backend.store()
    for n in range(5):
        await store.append("v", [added(n)])
    async with store.subscribe_stream("v", after=3) as events:
        seen = await collect(events, 2)
        assert events.after == 5
    assert [e.version for e in seen] == [4, 5]


async def test_bad_arguments_are_refused(backend: Backend) -> None:
    store = backend.store()
    with pytest.raises(InvalidArgumentError, match="page_size"):
        store.subscribe(page_size=0)
    with pytest.raises(ArgumentTypeError, match="page_size"):
        store.subscribe(page_size="10")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="poll_interval"):
        store.subscribe(poll_interval=-1)
    with pytest.raises(InvalidArgumentError, match="after_position"):
        store.subscribe(after_position=-1)
    with pytest.raises(InvalidArgumentError, match="after"):
        store.subscribe_stream("s", after=-2)
    with pytest.raises(InvalidArgumentError, match="stream id"):
        store.subscribe_stream("")

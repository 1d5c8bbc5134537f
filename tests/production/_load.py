"""A load of eight tasks that write and read through sessions while a server restarts
or fails over, and the accounting of what every call answered.

Each task adds one item per call, each attempt with content of its own, and reads its
history back every third call. A call's outcome is what the caller can rely on:

* ``done``: acknowledged; the item must be stored, once;
* ``not committed``: a convstore error that says nothing was written (the task then
  tries again, with a new attempt: that is safe);
* ``unknown``: ``ConnectionLostError`` with ``outcome_unknown`` (stored at most once);
* anything else (an exception outside convstore's hierarchy, or no answer within a
  minute) fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from eventstore import ConnectionLostError, ConvstoreError, EventStore
from sessions import StoreSession

TASKS = 8
CALL_BOUND = 60.0  # seconds: a call that has not answered by then has hung


@dataclass
class Attempt:
    task: int
    content: str
    started: float
    ended: float = 0.0
    outcome: str = ""
    error: str = ""


@dataclass
class Load:
    """Run with :meth:`run` until ``stop`` is set; then check with :meth:`check`."""

    store: EventStore
    prefix: str
    attempts: list[Attempt] = field(default_factory=list)
    reads: int = 0
    failed_reads: int = 0
    # False where acknowledged writes may be lost (asynchronous failover): a read that
    # misses its own write is counted instead of failing the test.
    strict_reads: bool = True
    stale_reads: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    wrote: asyncio.Event = field(default_factory=asyncio.Event)  # set at every ack

    def session(self, task: int) -> StoreSession:
        return StoreSession(f"{self.prefix}-{task}", self.store)

    async def run(self) -> None:
        await asyncio.gather(*(self._task(n) for n in range(TASKS)))

    async def _task(self, task: int) -> None:
        session = self.session(task)
        number = 0
        while not self.stop.is_set():
            number += 1
            attempt = Attempt(task, f"{task}.{number}", time.monotonic())
            self.attempts.append(attempt)
            try:
                async with asyncio.timeout(CALL_BOUND):
                    await session.add_items([{"role": "user", "content": attempt.content}])
                attempt.outcome = "done"
                self.wrote.set()
            except ConnectionLostError as error:
                attempt.outcome = "unknown" if error.outcome_unknown else "not committed"
                attempt.error = str(error)
            except ConvstoreError as error:
                attempt.outcome = "not committed"
                attempt.error = f"{type(error).__name__}: {error}"
            except TimeoutError:
                attempt.outcome = "hung"
            attempt.ended = time.monotonic()
            if attempt.outcome != "done":
                await asyncio.sleep(0.02)
            elif number % 3 == 0:
                await self._read(session, attempt.content)

    async def _read(self, session: StoreSession, written: str) -> None:
        """Read the history back: it holds the write just acknowledged (a read that
        fails must fail with a convstore error; it changes no write's outcome)."""
        try:
            async with asyncio.timeout(CALL_BOUND):
                items = await session.get_items()
        except ConvstoreError:
            self.failed_reads += 1
            return
        self.reads += 1
        if written not in [item["content"] for item in items]:
            assert not self.strict_reads, "a read missed its own write"
            self.stale_reads += 1

    def outcomes(self) -> Counter[str]:
        return Counter(a.outcome for a in self.attempts)

    def longest_pause(self) -> float:
        """The longest time in seconds during which no call of any task was
        acknowledged: what the application saw of the outage."""
        acks = sorted(a.ended for a in self.attempts if a.outcome == "done")
        return max((b - a for a, b in itertools.pairwise(acks)), default=0.0)

    async def missing(self, store: EventStore) -> list[str]:
        """Acknowledged attempts not stored in ``store``'s database (after checking that
        nothing is stored twice, nor anything a caller was told was not committed)."""
        lost = []
        for task in range(TASKS):
            stored = Counter(
                item["content"]
                for item in await StoreSession(f"{self.prefix}-{task}", store).get_items()
            )
            for attempt in (a for a in self.attempts if a.task == task):
                count = stored.get(attempt.content, 0)
                assert count <= 1, f"{attempt.content} stored {count} times"
                if attempt.outcome == "not committed":
                    assert count == 0, (
                        f"{attempt.content} stored, but reported not committed: {attempt.error}"
                    )
                if attempt.outcome == "done" and count == 0:
                    lost.append(attempt.content)
        return lost

    def check_definite(self) -> None:
        """Every call answered, with one of the outcomes a caller can act on."""
        answered = self.outcomes()
        assert set(answered) <= {"done", "not committed", "unknown"}, answered
        assert answered["done"] > 0

    def written_since(self, since: float) -> bool:
        """Whether every task has had a call acknowledged that started at or after
        ``since``."""
        done = {a.task for a in self.attempts if a.outcome == "done" and a.started >= since}
        return len(done) == TASKS


async def run_while(load: Load, event: Callable[[], None], *, before: float) -> float:
    """Run ``load``; once every task has written, and ``before`` seconds more, run
    ``event`` (blocking: a server being restarted) on a thread, then go on until every
    task has written again (at most ``RECOVERY_BOUND`` seconds) and half a second more;
    return when ``event`` started (time.monotonic())."""
    running = await start(load, before)
    started = time.monotonic()
    await asyncio.to_thread(event)
    await recovery(load, started)
    load.stop.set()
    await running
    return started


RECOVERY_BOUND = 60.0


async def start(load: Load, before: float) -> asyncio.Task[None]:
    """Start ``load``; return once every task has written (bounded) and ``before``
    seconds more have passed."""
    running = asyncio.create_task(load.run())
    await recovery(load, 0.0)
    await asyncio.sleep(before)
    return running


async def recovery(load: Load, since: float) -> None:
    """Until every task has written again after ``since`` (bounded), then 0.5 s more."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(RECOVERY_BOUND):
            while not load.written_since(since):
                load.wrote.clear()
                await load.wrote.wait()
    assert load.written_since(since), "a task never wrote again: the store did not recover"
    await asyncio.sleep(0.5)

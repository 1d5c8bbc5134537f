"""Concurrent appends to one stream, run as one transaction.

Every append to a stream holds that stream's lock while it checks the version and
continues the hash chain, so appends to one stream run one after another whatever
the number of tasks issuing them. Eight tasks adding to one session at once would
pay for eight transactions in a row (each with its round trips on a server). Instead,
while one append to a stream is in flight, the appends to that stream that arrive
meanwhile wait in a queue (a *lane*); when it ends, the lane's drain task takes the
waiting appends, in the order they joined, as one group, and runs them as one append
of all their events: one version check, one continuation of the chain, one commit.
Each caller keeps its own events (contiguous, in its order) and gets its own result.

An append with nothing in flight on its stream runs at once, as it always did, so a
single writer pays nothing for this. If the combined transaction fails, nothing of it
was written, and each waiting append is run again alone, so that every caller gets its
own outcome and never another caller's error (an append is idempotent by event id, so
running again one that did commit returns its original result).

Cancellation keeps the contract of :func:`~eventstore.backends.base.outcome_then_cancel`:
a caller cancelled while it still waits in the lane is withdrawn (nothing of it is
written, plain ``CancelledError``); one whose events were already taken into a
transaction waits for that transaction's outcome, then raises
:class:`~eventstore.errors.CancelledAfterCommit` carrying its result, or plain
``CancelledError`` if it did not commit. The drain task belongs to no caller, so a
cancelled caller never strands the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .backends.base import await_kept_outcome
from .errors import CancelledAfterCommit

W = TypeVar("W")
R = TypeVar("R")

log = logging.getLogger("convstore.eventstore")

# Bounds on one combined append (a single append larger than these runs alone): the
# transaction stays short, and its INSERT stays far below any server's packet limit.
MAX_GROUP_EVENTS = 256
MAX_GROUP_BYTES = 1 << 20


@dataclass(slots=True, eq=False)  # compared by identity (see _Lane.withdraw)
class _Waiting(Generic[W, R]):
    """One append waiting in a lane, and how to hand its outcome back."""

    work: W
    events: int
    size: int
    future: asyncio.Future[R]
    # (ok, value) once settled; kept here because the caller may have cancelled
    # ``future`` (see eventstore/backends/base.py, await_kept_outcome).
    outcome: tuple[bool, R | BaseException] | None = None
    # Set when a cancelled caller waits for the outcome of its taken append.
    late: asyncio.Future[None] | None = None

    def settle(self, ok: bool, value: R | BaseException) -> None:
        self.outcome = (ok, value)
        future = self.future
        if not future.done():
            if ok:
                future.set_result(value)  # type: ignore[arg-type]
            elif isinstance(value, asyncio.CancelledError):
                future.cancel()
            else:
                assert isinstance(value, BaseException)
                future.set_exception(value)
        if self.late is not None and not self.late.done():
            self.late.set_result(None)


@dataclass(slots=True)
class _Lane(Generic[W, R]):
    """The appends to one stream waiting behind the one in flight."""

    waiting: deque[_Waiting[W, R]] = field(default_factory=deque)

    def withdraw(self, waiting: _Waiting[W, R]) -> bool:
        """Take ``waiting`` back if no transaction has taken it yet."""
        try:
            self.waiting.remove(waiting)
        except ValueError:
            return False
        return True

    def take(self, max_events: int, max_bytes: int) -> list[_Waiting[W, R]]:
        """The oldest waiting appends that fit in one group (at least one)."""
        queue = self.waiting
        group = [queue.popleft()]
        events, size = group[0].events, group[0].size
        while queue:
            nxt = queue[0]
            if events + nxt.events > max_events or size + nxt.size > max_bytes:
                break
            group.append(queue.popleft())
            events += nxt.events
            size += nxt.size
        return group


class AppendQueue(Generic[W, R]):
    """Runs appends to one stream alone when nothing else is in flight there, and
    those that arrive meanwhile as groups (see the module's docstring).

    ``alone(work)`` runs one append; ``together(works)`` runs several as one
    transaction and returns one result per work, in order, or raises if nothing
    was written.
    """

    def __init__(
        self,
        alone: Callable[[W], Awaitable[R]],
        together: Callable[[list[W]], Awaitable[list[R]]],
        *,
        max_events: int = MAX_GROUP_EVENTS,
        max_bytes: Callable[[], int] | int = MAX_GROUP_BYTES,
    ) -> None:
        self._alone = alone
        self._together = together
        self._max_events = max_events
        self._max_bytes = max_bytes
        # (stream key, event loop) -> lane, while an append to the stream is in flight.
        self._lanes: dict[tuple[Hashable, asyncio.AbstractEventLoop], _Lane[W, R]] = {}
        self._drains: set[asyncio.Task[None]] = set()

    async def submit(self, stream: Hashable, work: W, *, events: int, size: int) -> R:
        """Run ``work`` (``events`` events of ``size`` bytes) on ``stream``: at once if
        nothing is in flight there, else in the next group."""
        loop = asyncio.get_running_loop()
        key = (stream, loop)  # futures and tasks belong to one loop
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            try:
                return await self._alone(work)
            finally:
                if lane.waiting:
                    self._start_drain(key, lane, loop)
                else:
                    del self._lanes[key]
        waiting: _Waiting[W, R] = _Waiting(work, events, size, loop.create_future())
        lane.waiting.append(waiting)
        result: R = await await_kept_outcome(waiting, lambda: lane.withdraw(waiting))
        return result

    def _start_drain(
        self,
        key: tuple[Hashable, asyncio.AbstractEventLoop],
        lane: _Lane[W, R],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        task = loop.create_task(self._drain(key, lane))
        self._drains.add(task)  # held until done, so that it is not garbage-collected
        task.add_done_callback(self._drains.discard)

    async def _drain(
        self, key: tuple[Hashable, asyncio.AbstractEventLoop], lane: _Lane[W, R]
    ) -> None:
        """Run the lane's waiting appends, a group at a time, until none is left."""
        group: list[_Waiting[W, R]] = []
        try:
            while lane.waiting:
                limit = self._max_bytes if isinstance(self._max_bytes, int) else self._max_bytes()
                group = lane.take(self._max_events, limit)
                await self._run_group(group)
                group = []
                # Let the callers just settled run first: a task that appends again at
                # once joins the next group instead of running alone after it.
                await asyncio.sleep(0)
        except BaseException as error:  # cancelled (the loop is ending): settle everyone
            for waiting in [*group, *lane.waiting]:
                if waiting.outcome is None:
                    waiting.settle(False, error)
            lane.waiting.clear()
            raise
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _run_group(self, group: list[_Waiting[W, R]]) -> None:
        if len(group) > 1:
            try:
                results = await self._together([w.work for w in group])
            except CancelledAfterCommit as committed:
                for waiting, result in zip(group, committed.result, strict=True):
                    waiting.settle(True, result)
                raise
            except Exception as error:
                # Nothing was written (or, a connection lost while committing, it is
                # unknown): run each alone, so each gets its own outcome. An append that
                # did commit finds its event ids stored and returns its original result.
                log.debug("a combined append of %d failed (%s); each runs alone", len(group), error)
            else:
                for waiting, result in zip(group, results, strict=True):
                    waiting.settle(True, result)
                return
        for waiting in group:
            try:
                result = await self._alone(waiting.work)
            except CancelledAfterCommit as committed:
                waiting.settle(True, committed.result)
                raise
            except Exception as error:
                waiting.settle(False, error)
            else:
                waiting.settle(True, result)

"""Reads of a session from a hot standby, never older than the session's own writes.

A streaming standby replays the primary's write-ahead log a little behind it. A read
sent there right after the application wrote may miss that write, which for a
conversation is a wrong answer (the agent would not see the message just added). So a
store with a read replica keeps, per stream, whether it wrote there since the last read:

* every append marks its stream before it starts and again when it ends, whatever the
  outcome (a cancelled or failed write may have committed);
* the next read of a marked stream asks the primary for its WAL insert position
  (``pg_current_wal_insert_lsn()``, at or after the commit of every write that ended
  before), once, and remembers it as the stream's target;
* a read with a target runs on the standby only after ``pg_last_wal_replay_lsn()``
  has reached it, checked in the read's own first statement (every later statement
  sees at least that much); otherwise it waits, polling, up to ``max_wait`` seconds,
  then reads from the primary and logs why;
* a read while an append of the stream is still in flight goes to the primary.

A standby that cannot be reached sends reads to the primary for ``retry_after``
seconds (with a warning), then is tried again. Writes always go to the primary.

Marks are kept per primary engine, so sessions made per request on one engine (or on
one store) see each other's writes; another process's writes are not known here (see
docs/scaling.md, "Read replicas").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .backends import open_runner
from .backends.base import Runner, T, TxFunction
from .checks import check_seconds
from .errors import ArgumentTypeError, OperationalError

log = logging.getLogger("convstore.eventstore")

P = ParamSpec("P")
R = TypeVar("R")


class Primary(Protocol):
    """Runs a read on the primary (the store's own ``_run``, with its retries)."""

    def __call__(self, fn: TxFunction[T], /) -> Awaitable[T]: ...


# Streams with a write not yet confirmed on the standby, per engine, at most; past it
# the oldest are forgotten into one target that every unmarked read waits for.
_MARKED_STREAMS = 100_000


@dataclass(frozen=True, slots=True)
class ReadReplica:
    """A hot standby to send history reads to (``EventStore(..., read_replica=...)``).

    ``target`` is its URL or an :class:`AsyncEngine` on it. A read waits at most
    ``max_wait`` seconds for the standby to replay the reader's own last write, then
    reads from the primary; a standby that fails is left alone for ``retry_after``
    seconds. ``connect_timeout`` bounds a connection attempt of an engine made here
    from a URL.
    """

    target: str | AsyncEngine
    max_wait: float = 0.5
    retry_after: float = 5.0
    connect_timeout: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.target, str | AsyncEngine):
            raise ArgumentTypeError(
                "a read replica is a database URL or an AsyncEngine, "
                f"not {type(self.target).__name__}"
            )
        for name in ("max_wait", "retry_after", "connect_timeout"):
            check_seconds(name, getattr(self, name), most=3600, zero=True)


@dataclass(slots=True)
class _Mark:
    """One stream's writes: ``changes`` counts starts and ends of appends, ``running``
    the appends in flight, ``target`` the primary's WAL position read when ``changes``
    was ``seen`` (None: not read since the last change)."""

    changes: int = 0
    running: int = 0
    seen: int = -1
    target: int | None = None


@dataclass(slots=True)
class _Marks:
    """What one primary engine's stores wrote that a standby may not have yet."""

    streams: dict[str, _Mark] = field(default_factory=dict)
    # Forgotten marks (too many streams): a target every read waits for, and how many
    # were forgotten without one yet (the next read asks the primary for one).
    floor: int | None = None
    floor_unknown: int = 0


_marks_by_engine: weakref.WeakKeyDictionary[Any, _Marks] = weakref.WeakKeyDictionary()

_PRIMARY = object()  # a read that must go to the primary (an append is in flight)


class ReplicaReads:
    """The read routing of one store: a runner on the standby, the store's primary
    (to read WAL positions from, and to fall back to), and the marks of writes."""

    def __init__(self, replica: ReadReplica, primary: Runner) -> None:
        self.replica = replica
        self._dialect = primary.dialect
        self._dialect.check_read_replica()
        target = replica.target
        if isinstance(target, AsyncEngine):
            self._runner = open_runner(target)
        else:
            self._runner = open_runner(
                target, engine_kwargs={"connect_args": {"timeout": replica.connect_timeout}}
            )
        self._runner.dialect.check_read_replica()
        self._marks = _marks_by_engine.setdefault(primary.engine_key, _Marks())
        self._down_until = 0.0

    @property
    def runner(self) -> Runner:
        return self._runner

    # -- writes --------------------------------------------------------------------

    def started(self, stream_id: str) -> None:
        """An append to ``stream_id`` starts (call :meth:`ended` when it ends)."""
        marks = self._marks.streams
        mark = marks.pop(stream_id, None) or _Mark()
        marks[stream_id] = mark  # newest last: the oldest are forgotten first
        mark.changes += 1
        mark.running += 1
        if len(marks) > _MARKED_STREAMS:
            self._forget(next(iter(marks)))

    def ended(self, stream_id: str) -> None:
        mark = self._marks.streams.get(stream_id)
        if mark is None:  # forgotten meanwhile: the floor covers it
            self._marks.floor_unknown += 1
            return
        mark.changes += 1
        mark.running -= 1

    def _forget(self, stream_id: str) -> None:
        mark = self._marks.streams.pop(stream_id)
        if mark.target is None or mark.seen != mark.changes:
            self._marks.floor_unknown += 1
        elif self._marks.floor is None or mark.target > self._marks.floor:
            self._marks.floor = mark.target

    # -- reads ---------------------------------------------------------------------

    async def run(
        self,
        fn: TxFunction[T],
        stream_id: str,
        primary: Primary,
        *,
        quick: bool,
    ) -> T:
        """``fn`` on the standby once it has this store's writes to ``stream_id``,
        else (in flight, too far behind, unreachable) ``primary(fn)``."""
        if time.monotonic() < self._down_until:
            return await primary(fn)
        target = await self._target(stream_id, primary)
        if target is _PRIMARY:
            return await primary(fn)
        lsn = target if isinstance(target, int) else None
        deadline = time.monotonic() + self.replica.max_wait
        delay = 0.001
        while True:
            try:
                done, value = await self._runner.run(
                    lambda conn: self._read_tx(conn, fn, lsn), write=False, quick=quick
                )
            except OperationalError as error:
                self._down_until = time.monotonic() + self.replica.retry_after
                log.warning(
                    "read replica failed (%s): reading from the primary for %.1f s",
                    error,
                    self.replica.retry_after,
                )
                return await primary(fn)
            if done:
                self._confirmed(stream_id, lsn)
                return cast(T, value)
            if time.monotonic() + delay > deadline:
                log.warning(
                    "read replica has not replayed the write to %r (WAL byte %d) "
                    "within %.3f s: reading from the primary",
                    stream_id,
                    lsn,
                    self.replica.max_wait,
                )
                return await primary(fn)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.005)

    def _read_tx(
        self, conn: Connection, fn: TxFunction[T], lsn: int | None
    ) -> tuple[bool, T | None]:
        if lsn is not None and not self._dialect.replayed(conn, lsn):
            return False, None
        return True, fn(conn)

    async def _target(self, stream_id: str, primary: Primary) -> int | object | None:
        """The WAL position the standby must have replayed for this read; None if
        nothing; ``_PRIMARY`` while an append of the stream is in flight."""
        marks = self._marks
        mark = marks.streams.get(stream_id)
        if mark is None:
            pending = marks.floor_unknown
            if pending:
                position = await primary(self._dialect.write_position)
                if marks.floor is None or position > marks.floor:
                    marks.floor = position
                marks.floor_unknown -= pending  # (any forgotten meanwhile stay pending)
            return marks.floor
        if mark.running:
            return _PRIMARY
        if mark.seen != mark.changes:
            changes = mark.changes
            position = await primary(self._dialect.write_position)
            if mark.changes != changes:  # written again meanwhile
                return _PRIMARY
            mark.seen, mark.target = changes, position
        return mark.target

    def _confirmed(self, stream_id: str, lsn: int | None) -> None:
        """The standby has replayed ``lsn``: reads need not wait for it again."""
        marks = self._marks
        mark = marks.streams.get(stream_id)
        if mark is not None and not mark.running and mark.target == lsn:
            if mark.seen == mark.changes:
                del marks.streams[stream_id]
        elif mark is None and lsn is not None and marks.floor == lsn:
            marks.floor = None

    async def close(self) -> None:
        await self._runner.close()


class _Routed(Protocol):
    @property
    def read_routing(self) -> ReplicaReads | None: ...


S = TypeVar("S", bound=_Routed)


def marks_writes(
    method: Callable[Concatenate[S, str, P], Awaitable[R]],
) -> Callable[Concatenate[S, str, P], Awaitable[R]]:
    """For an append method whose first argument names the stream: with a read
    replica, the stream is marked while the append runs and once it has ended, whatever
    its outcome (:meth:`ReplicaReads.started`)."""

    @functools.wraps(method)
    async def marked(store: S, stream_id: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        routing = store.read_routing
        if routing is None or not isinstance(stream_id, str):
            return await method(store, stream_id, *args, **kwargs)
        routing.started(stream_id)
        try:
            return await method(store, stream_id, *args, **kwargs)
        finally:
            routing.ended(stream_id)

    return marked

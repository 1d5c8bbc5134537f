"""Subscriptions: follow the log as it grows, as an async iterator of new events.

:meth:`EventStore.subscribe <eventstore.EventStore.subscribe>` follows every stream
by position, :meth:`EventStore.subscribe_stream
<eventstore.EventStore.subscribe_stream>` one stream by version. Both read the log in
pages (:meth:`~eventstore.EventStore.read_all` / :meth:`~eventstore.EventStore.read_stream`
with ``limit=page_size``), so a subscriber far behind holds one page in memory, never
the backlog; each event is yielded once, in order, none skipped (positions are
commit-ordered on every backend, and a stream's versions are written one transaction
after another); and a subscriber that stops and starts again with the last position
(or version) it handled resumes exactly after it.

Between pages a subscriber waits for a :class:`~eventstore.backends.base.ChangeSignal`:
this process's own appends wake it at once; other processes' appends wake it through
PostgreSQL's ``LISTEN/NOTIFY`` or SQLite's data version, and on MariaDB (no such
notice) through polling. Whatever the backend, it also reads again every
``poll_interval`` seconds, so a notice that never comes costs one interval, never an
event. docs/subscriptions.md gives the guarantees, the latencies measured, and what
holds a PostgreSQL tail back (the oldest transaction in progress).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Self

from .backends.signals import ChangeSignal
from .checks import check_count, check_integer, check_seconds, check_stream_id
from .errors import StoreClosedError
from .records import RecordedEvent

if TYPE_CHECKING:
    from .store import EventStore

__all__ = ["DEFAULT_PAGE_SIZE", "Subscription", "follow", "wake_subscribers"]

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 100_000

# The open signals of each database in this process (by the runner's engine key),
# which the appends of every store on that database poke.
_signals: dict[object, weakref.WeakSet[ChangeSignal]] = {}


def wake_subscribers(database: object) -> None:
    """After a write to ``database`` (a runner's engine key) committed: wake this
    process's subscribers of it."""
    found = _signals.get(database)
    if found:
        for signal in list(found):
            signal.poke()


def _register(database: object, signal: ChangeSignal) -> None:
    _signals.setdefault(database, weakref.WeakSet()).add(signal)


def _unregister(database: object, signal: ChangeSignal) -> None:
    found = _signals.get(database)
    if found is not None:
        found.discard(signal)
        if not found:
            del _signals[database]


def check_interval(poll_interval: object) -> float | None:
    """``poll_interval`` as seconds (from 0 to 3600, not 0), or None; else raise."""
    if poll_interval is None:
        return None
    return float(check_seconds("poll_interval", poll_interval, most=3600, zero=False))


ReadPage = Callable[[int, int], Awaitable[list[RecordedEvent]]]


class Subscription:
    """New events of the log, each once, in order, as an async iterator.

    Made by :meth:`EventStore.subscribe <eventstore.EventStore.subscribe>` and
    :meth:`EventStore.subscribe_stream <eventstore.EventStore.subscribe_stream>`.
    Use it with ``async with`` (or call :meth:`aclose`), which releases what it
    listens with (a PostgreSQL connection, a SQLite connection). :attr:`after` is the
    position (or version) of the last event it yielded: start a new subscription
    there to resume.
    """

    def __init__(
        self,
        store: EventStore,
        read_page: ReadPage,
        *,
        after: int,
        key: Callable[[RecordedEvent], int],
        stream_id: str | None,
        page_size: int,
        poll_interval: float | None,
        listen: bool,
    ) -> None:
        self._store = store
        self._read_page = read_page
        self._key = key
        self._stream_id = stream_id
        self._page_size = page_size
        self._poll_interval = poll_interval
        self._listen = listen
        self._after = after
        self._page: deque[RecordedEvent] = deque()
        self._signal: ChangeSignal | None = None
        self._closed = False

    @property
    def after(self) -> int:
        """The position (``subscribe``) or version (``subscribe_stream``) of the last
        event yielded; where the subscription started if none yet."""
        return self._after

    @property
    def page_size(self) -> int:
        """The most events one read fetches (and the subscription holds)."""
        return self._page_size

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> RecordedEvent:
        while not self._page:
            if self._closed or self._store.closed:
                raise StopAsyncIteration
            signal = self._signal or await self._open_signal()
            mark = signal.mark()  # before the read: a change during it is not missed
            page = await self._read_page(self._after, self._page_size)
            if page:
                self._page.extend(page)
                break
            interval = self._poll_interval or signal.default_poll_interval
            await signal.wait(mark, interval)
        event = self._page.popleft()
        self._after = self._key(event)
        return event

    async def _open_signal(self) -> ChangeSignal:
        signal = self._store.change_signal(self._stream_id, listen=self._listen)
        await signal.open()
        self._signal = signal
        _register(self._store.database_key, signal)
        return signal

    async def aclose(self) -> None:
        """Stop: the iteration ends, and the connection it listened on is released."""
        self._closed = True
        self._page.clear()
        signal, self._signal = self._signal, None
        if signal is not None:
            _unregister(self._store.database_key, signal)
            signal.poke()  # a task waiting in __anext__ stops now
            await signal.close()

    async def __aenter__(self) -> Self:
        if self._store.closed:
            raise StoreClosedError("this event store is closed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        what = "all streams" if self._stream_id is None else f"stream {self._stream_id!r}"
        return f"<Subscription to {what} after {self._after}>"


def follow(
    store: EventStore,
    stream_id: str | None,
    *,
    after: int,
    page_size: int,
    poll_interval: float | None,
    listen: bool,
) -> Subscription:
    """What :meth:`EventStore.subscribe <eventstore.EventStore.subscribe>` returns
    (``stream_id`` None: every stream, by position, after the position ``after``) and
    :meth:`EventStore.subscribe_stream <eventstore.EventStore.subscribe_stream>` (one
    stream, by version, after the version ``after``)."""
    read_page: ReadPage
    if stream_id is None:
        check_count("after_position", after)
        read_page = partial(_log_page, store)
    else:
        check_stream_id(stream_id)
        check_count("after", after)
        read_page = partial(_stream_page, store, stream_id)
    return Subscription(
        store,
        read_page,
        after=after,
        key=_position if stream_id is None else _version,
        stream_id=stream_id,
        page_size=check_integer("page_size", page_size, low=1, high=MAX_PAGE_SIZE),
        poll_interval=check_interval(poll_interval),
        listen=listen,
    )


def _log_page(store: EventStore, after: int, limit: int) -> Awaitable[list[RecordedEvent]]:
    """The next page of the whole log, after the position ``after``."""
    return store.read_all(after_position=after, limit=limit)


def _stream_page(
    store: EventStore, stream_id: str, after: int, limit: int
) -> Awaitable[list[RecordedEvent]]:
    """The next page of one stream, after the version ``after``."""
    return store.read_stream(stream_id, after=after, limit=limit)


def _position(event: RecordedEvent) -> int:
    return event.position


def _version(event: RecordedEvent) -> int:
    return event.version

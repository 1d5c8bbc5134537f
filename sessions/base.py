"""The Session protocol of the Agents SDK, on the event log.

Every mutation is one append (ItemsAdded, ItemPopped, SessionCleared); reads come
from the history projection, kept current by that same append transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Self

from sqlalchemy import Connection

from eventstore import (
    MAIN_BRANCH,
    Event,
    EventStore,
    InvalidArgumentError,
    ItemPopped,
    ItemsAdded,
    NewEvent,
    SessionCleared,
    SessionStarted,
    StoreClosedError,
    decode_item,
    encode_items,
)
from eventstore.store import check_stream_id
from projections.history import MAX_ITEMS_PER_EVENT
from projections.history_table import HistoryProjector

from ._settings import make_settings, resolve_limit
from ._tracing import instrument

# The projector has no state of its own: one instance serves every store.
HISTORY = HistoryProjector()
# get_items(limit=n) up to this n counts as a quick read (see EventStore.run).
_QUICK_READ = 1000


@instrument  # OpenTelemetry spans, when installed (sessions/_tracing.py)
class StoreSession:
    """A conversation session whose every operation is an event in ``store``.

    Subclasses decide where the store comes from; this class implements
    ``get_items``, ``add_items``, ``pop_item`` and ``clear_session`` (each taking the
    ``wrapper`` keyword the SDK's Runner passes) plus ``close`` and ``async with``.
    """

    session_id: str
    session_settings: Any

    def __init__(
        self,
        session_id: str,
        store: EventStore | Callable[[], EventStore],
        *,
        session_settings: Any = None,
    ) -> None:
        """``store`` may be a function that opens one: it is called only once the
        arguments are accepted, so a refused session opens (and leaks) nothing."""
        self.session_id = check_stream_id(session_id)
        self.session_settings = make_settings(session_settings)
        self._store = store if isinstance(store, EventStore) else store()
        self._branch_id = MAIN_BRANCH
        self._closed = False
        self._started: tuple[NewEvent] | None = None

    @property
    def store(self) -> EventStore:
        """The event store behind this session (read its log with ``read_stream``)."""
        return self._store

    # -- the Session protocol --------------------------------------------------------

    async def get_items(
        self, limit: int | None = None, *, turns: int | None = None, wrapper: Any = None
    ) -> list[Any]:
        """The history, oldest first; with ``limit``, only the newest ``limit`` items.

        ``turns=n`` reads the last ``n`` whole turns instead (a turn starts at a user
        message), so the window never begins with a tool output cut off from its
        call; ``limit`` then caps the number of items. Either read costs the same
        whatever the length of the history.
        """
        self._check_open()
        return await self._read(self._branch_id, resolve_limit(limit, self.session_settings), turns)

    async def _read(self, branch_id: str, n: int | None, turns: int | None) -> list[Any]:
        """Items of ``branch_id``: the newest ``n`` (all if None), or the last ``turns``."""
        if turns is not None:
            if isinstance(turns, bool) or not isinstance(turns, int) or turns < 0:
                raise InvalidArgumentError(f"turns must be an integer >= 0, not {turns!r}")
            if turns == 0 or n == 0:
                return []
            found = await self._store.run(
                lambda conn: HISTORY.read_last_turns(conn, self.session_id, branch_id, turns, n),
            )
            return [decode_item(row) for row in found]
        if n == 0:
            return []
        rows = await self._store.run(
            lambda conn: HISTORY.read_items(conn, self.session_id, branch_id, n),
            quick=n is not None and n <= _QUICK_READ,
        )
        return [decode_item(row) for row in rows]

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        """Append ``items`` in order. Concurrent callers never lose or duplicate one."""
        self._check_open()
        encoded = encode_items(items)  # refuses non-JSON before anything is written
        if not encoded:
            return
        events = [
            NewEvent(
                ItemsAdded(items=encoded[i : i + MAX_ITEMS_PER_EVENT], branch_id=self._branch_id)
            )
            for i in range(0, len(encoded), MAX_ITEMS_PER_EVENT)
        ]
        await self._store.append(self.session_id, events, on_new_stream=self._preamble())

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        """Remove and return the newest item, or None if there is none.

        The removal is an ItemPopped event, chosen and appended in one transaction that
        holds the session's lock, so concurrent pops never return the same item.
        """
        self._check_open()

        def take_newest(conn: Connection, version: int) -> tuple[list[Event], bytes] | None:
            top = HISTORY.read_top(conn, self.session_id, self._branch_id)
            if top is None:
                return None
            return [ItemPopped(seq=top[0], branch_id=self._branch_id)], top[1]

        # Decided under the stream's lock: no other pop can take the same item.
        popped = await self._store.append_decided(self.session_id, take_newest)
        return None if popped is None else decode_item(popped[1])

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Remove every item of the session (the log keeps them, as history)."""
        self._check_open()
        await self._store.append(
            self.session_id, [SessionCleared()], on_new_stream=self._preamble()
        )

    # -- lifecycle -------------------------------------------------------------------

    def _preamble(self) -> tuple[NewEvent]:
        """The SessionStarted event, written only by the append that creates the stream.

        One per session object: a retry or a racing creator with the same id is
        recognised by the store, and a stream that exists ignores it.
        """
        if self._started is None:
            started = SessionStarted(metadata={"session_class": type(self).__name__})
            self._started = (NewEvent(started, uuid.uuid4()),)
        return self._started

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"session {self.session_id!r} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Release what this session holds. Idempotent; later calls raise StoreClosedError."""
        if self._closed:
            return
        self._closed = True
        await self._release()

    async def _release(self) -> None:
        """Release the store (subclasses share or own it)."""
        await self._store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(session_id={self.session_id!r}, branch={self._branch_id!r})"

"""The Session protocol of the Agents SDK, on the event log.

Every mutation is one append (ItemsAdded, ItemPopped, SessionCleared); reads come
from the history projection, kept current by that same append transaction.

Cancellation. A mutation whose caller is cancelled either did not happen (it was
withdrawn before it started: plain ``CancelledError``) or committed and then
propagates the cancellation as :class:`~eventstore.CancelledAfterCommit` (a
``CancelledError``), whose ``result`` is the popped item for ``pop_item``. The session
also remembers the cancelled call, so the natural retry is safe: the next
``add_items`` of the same items reuses the cancelled call's event ids (a no-op if it
had committed, since the store's append is idempotent by event id; the write
otherwise), and the next ``pop_item`` hands out the item a cancelled pop removed
instead of removing another.

Starting. The append that creates a session's stream also writes its SessionStarted
event (``on_new_stream``). Each session object makes that event once, so a retry or a
racing creator with the same id is recognised by the store; a stream that exists
ignores it.

Closing. ``close()`` lets go of the store at once and returns what must still be
awaited; subclasses that share a store (one per SQLite file) only drop their hold on
it. A session that owns a connection and is garbage-collected unclosed warns
(ResourceWarning) and closes from the loop's next turn; outside a loop it only hands
its store over for release later, without taking a lock, since the collector may have
interrupted the lock's holder. A session handed a store that its owner closes leaks
nothing and does not warn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import warnings
from collections.abc import Callable, Coroutine, Generator, Iterator, Sequence
from typing import Any, Self

import msgspec
from sqlalchemy import Connection

from eventstore import (
    MAIN_BRANCH,
    AppendResult,
    CancelledAfterCommit,
    Event,
    EventStore,
    IntegrityError,
    ItemPopped,
    ItemsAdded,
    NewEvent,
    ProjectionMismatchError,
    SessionCleared,
    SessionStarted,
    StoreClosedError,
    check_count,
    check_stream_id,
    decode_arrays,
    decode_item,
    decode_items,
    encode_items,
)
from projections.history import item_batches
from projections.history_table import HistoryProjector, decode_entry

from . import compaction
from ._settings import check_logger, make_settings, resolve_limit
from ._tracing import instrument
from .compaction import CompactionResult

# The projector has no state of its own: one instance serves every store.
HISTORY = HistoryProjector()
# A read of up to this many items counts as a quick read (see EventStore.run).
QUICK_READ = 1000
# How many cancelled add_items calls a session (or a wrapper of one) remembers for
# their retries.
REMEMBERED_CANCELLATIONS = 16

log = logging.getLogger("convstore.sessions")

# Closings started by a plain ``session.close()`` inside a running loop: held until
# done, so that the task is not garbage-collected half-way.
_closing_tasks: set[asyncio.Task[None]] = set()


class Closing:
    """What ``close()`` returns: the closing has already started (or finished).

    ``session.close()`` closes whether or not it is awaited, like the SDK's synchronous
    ``close()``: outside a running event loop it finishes before returning; inside one,
    the session is closed at once (any later call raises) and the release of its
    connections runs as a task, which ``await session.close()`` waits for.
    """

    __slots__ = ("_task",)

    def __init__(self, release: Coroutine[Any, Any, None] | None) -> None:
        self._task: asyncio.Task[None] | None = None
        if release is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called from synchronous code: finish now
            asyncio.run(release)
            return
        self._task = task = loop.create_task(release)
        _closing_tasks.add(task)
        task.add_done_callback(_closing_done)

    def __await__(self) -> Generator[Any, None, None]:
        if self._task is not None:
            yield from self._task.__await__()

    @property
    def done(self) -> bool:
        return self._task is None or self._task.done()


def _closing_done(task: asyncio.Task[None]) -> None:
    """Forget a finished closing task, logging its failure if it failed."""
    _closing_tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a session failed", exc_info=task.exception())


@contextlib.contextmanager
def preparing() -> Iterator[None]:
    """Around what a call writes before its own change (tables, a data key): if the call
    is cancelled there, that write may have committed, but the caller's change has not
    started, so the caller gets a plain ``CancelledError``, never ``CancelledAfterCommit``."""
    try:
        yield
    except CancelledAfterCommit:
        raise asyncio.CancelledError() from None


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
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        """``store`` may be a function that opens one: it is called only once the
        arguments are accepted, so a refused session opens (and leaks) nothing.

        ``logger`` (the SDK's keyword) receives this session's own records (cancelled
        calls, branch changes, usage it could not record); by default they go to the
        ``convstore.sessions`` logger. The store's records (retries, slow transactions)
        stay on ``convstore.eventstore``: a store may serve many sessions.
        """
        self._closed = True  # until the store is open (a refused session owns nothing)
        self.session_id = check_stream_id(session_id)
        self.session_settings = make_settings(session_settings)
        self._logger = check_logger(logger) or log
        self._owns_store = not isinstance(store, EventStore)
        self._store = store if isinstance(store, EventStore) else store()
        self._branch_id = MAIN_BRANCH
        self._closing: Closing | None = None
        self._started: tuple[NewEvent] | None = None
        # add_items calls that were cancelled, newest last: (branch, items, events).
        self._cancelled_adds: list[tuple[str, tuple[msgspec.Raw, ...], list[NewEvent]]] = []
        # Items (JSON) removed by pop_item calls cancelled after committing: (branch, item).
        self._undelivered: list[tuple[str, bytes | msgspec.Raw]] = []
        # How many events the last add_items appended (read by sessions/_tracing.py).
        self.added_events = 0
        self._closed = False

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
            if check_count("turns", turns) == 0 or n == 0:
                return []
            found = await self._store.run(
                lambda conn: HISTORY.read_last_turns(conn, self.session_id, branch_id, turns, n),
                stream_id=self.session_id,
            )
            try:
                return decode_items(found)
            except msgspec.DecodeError as error:
                raise await self._mismatch(branch_id) from error
        if n == 0:
            return []
        arrays: list[tuple[Any, int]] | None = None
        if n is None and self._store.slices_items:  # a short history: on this thread
            arrays = await self._store.run(
                lambda conn: HISTORY.read_short(conn, self.session_id, branch_id),
                quick=True,
                stream_id=self.session_id,
            )
        if arrays is None:
            arrays = await self._store.run(
                lambda conn: HISTORY.read_arrays(conn, self.session_id, branch_id, n),
                quick=n is not None and n <= QUICK_READ,
                stream_id=self.session_id,  # may be read from a replica (eventstore/replica.py)
            )
        try:
            return decode_arrays(arrays)
        except (msgspec.DecodeError, IntegrityError) as error:  # (a count that differs)
            raise await self._mismatch(branch_id) from error

    async def _mismatch(self, branch_id: str) -> ProjectionMismatchError:
        """The error for history rows that do not decode: it says where they differ."""
        return await self._store.run(
            lambda conn: HISTORY.find_mismatch(conn, self.session_id, branch_id)
        )

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        """Append ``items`` in order. Concurrent callers never lose or duplicate one."""
        self._check_open()
        self.added_events = 0
        encoded = encode_items(items)  # refuses non-JSON before anything is written
        if not encoded:
            return
        await self._append_items(self._branch_id, encoded)

    async def _append_items(self, branch: str, encoded: tuple[msgspec.Raw, ...]) -> AppendResult:
        """Append encoded items to ``branch`` (a cancelled call's retry reuses its ids)."""
        events = self._retried_add(branch, encoded)
        if events is None:
            events = [
                NewEvent(ItemsAdded(items=batch, branch_id=branch))
                for batch in item_batches(encoded)
            ]
        try:
            result = await self._store.append(
                self.session_id, events, on_new_stream=self._preamble()
            )
        except asyncio.CancelledError as cancelled:
            self._cancelled_adds.append((branch, encoded, events))
            del self._cancelled_adds[:-REMEMBERED_CANCELLATIONS]
            self._log_cancelled("add_items", cancelled)
            raise
        self._undelivered.clear()
        self.added_events = len(events)
        return result

    def _retried_add(self, branch: str, encoded: tuple[msgspec.Raw, ...]) -> list[NewEvent] | None:
        """The events of a cancelled add_items of exactly these items, if there was one."""
        for n, (was_branch, was_items, events) in enumerate(self._cancelled_adds):
            if was_branch == branch and was_items == encoded:
                del self._cancelled_adds[n]
                return events
        return None

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        """Remove and return the newest item, or None if there is none.

        The removal is an ItemPopped event, chosen and appended in one transaction that
        holds the session's lock, so concurrent pops never return the same item.
        """
        self._check_open()
        branch = self._branch_id
        undelivered = self.undelivered_pop(branch)
        if undelivered is not None:
            return decode_item(undelivered)

        def take_newest(conn: Connection, version: int) -> tuple[list[Event], bytes] | None:
            top = HISTORY.read_top(conn, self.session_id, branch)
            if top is None:
                return None
            decode_entry(self.session_id, branch, *top)  # a damaged row: nothing is popped
            return [ItemPopped(seq=top[0], branch_id=branch)], top[1]

        popped = await self.pop_decided(branch, take_newest, lambda stored: stored)
        return None if popped is None else decode_item(popped)

    # -- for sessions that wrap this one (EncryptedSession) ----------------------------

    async def current_branch(self) -> str:
        """The branch this object's calls read and write: main, for a session without
        branches (an Advanced session reads its durable current branch)."""
        return self._branch_id

    @property
    def remembers_cancelled_adds(self) -> bool:
        """Whether a cancelled ``add_items`` call is remembered: the same items added
        again on its branch are then its retry, which reuses its events."""
        return bool(self._cancelled_adds)

    def undelivered_pop(self, branch: str) -> bytes | msgspec.Raw | None:
        """The item (JSON) a pop on ``branch`` removed while its caller was cancelled, if
        there is one: the calling pop is that pop's retry, and hands it out."""
        if self._undelivered and self._undelivered[0][0] == branch:
            return self._undelivered.pop(0)[1]
        return None

    async def pop_decided(
        self,
        branch: str,
        decide: Callable[[Connection, int], tuple[Sequence[Event], Any] | None],
        as_json: Callable[[Any], bytes | msgspec.Raw],
    ) -> Any | None:
        """Append what ``decide`` chooses under the session's lock, a pop of ``branch``:
        its events and the popped item (None: nothing to pop); return that item.

        ``as_json`` gives the item's JSON. A cancellation after the commit raises
        CancelledAfterCommit whose ``result`` is the item, and remembers it for the
        retry (``undelivered_pop``); one where nothing was popped (or written) is a
        plain CancelledError.
        """
        try:
            popped = await self._store.append_decided(self.session_id, decide)
        except CancelledAfterCommit as cancelled:
            self._cancelled_adds.clear()
            result = cancelled.result
            if not isinstance(result, tuple):  # nothing to pop: nothing was written
                self._log_cancelled("pop_item", None)
                raise asyncio.CancelledError() from None
            stored = as_json(result[1])
            self._undelivered.append((branch, stored))
            self._log_cancelled("pop_item", cancelled)
            raise CancelledAfterCommit(decode_item(stored)) from None
        except asyncio.CancelledError as cancelled:
            self._log_cancelled("pop_item", cancelled)
            raise
        self._cancelled_adds.clear()
        return None if popped is None else popped[1]

    # -- compaction (sessions/compaction.py) ------------------------------------------

    async def compact(
        self,
        *,
        summarize: Any,
        keep_last_turns: int | None = None,
        keep_last_items: int | None = None,
    ) -> CompactionResult | None:
        """Replace the oldest items of the current branch by a summary, in one event.

        Keeps the last ``keep_last_turns`` whole turns (default 1), or the newest
        ``keep_last_items`` items; ``summarize`` is an async function of the replaced
        items, an ``agents.Agent`` or a :class:`~sessions.summarizers.ResponsesCompactor`
        (see :mod:`sessions.summarizers`). The log keeps every replaced item
        (``get_items(as_of=...)``, branches and exports see them). None if there is
        nothing to compact. CompactionConflictError (nothing written) if the replaced
        items changed while the summariser ran.
        """
        self._check_open()
        branch = await self.current_branch()

        async def open_items(stored: list[bytes]) -> list[Any]:
            return [decode_item(item) for item in stored]

        async def seal(items: list[Any]) -> tuple[msgspec.Raw, ...]:
            return encode_items(items)

        try:
            return await compaction.compact_stored(
                self._store,
                self.session_id,
                branch,
                summarize=summarize,
                keep_last_turns=keep_last_turns,
                keep_last_items=keep_last_items,
                open_items=open_items,
                seal=seal,
            )
        finally:
            self._mutated()

    async def revert_compaction(self, version: int | None = None) -> CompactionResult:
        """Undo the newest compaction of the current branch (or the one at stream
        ``version``): one event showing the replaced items again, then those added
        since. InvalidArgumentError if there is none."""
        self._check_open()
        branch = await self.current_branch()
        try:
            return await compaction.revert_compaction(self._store, self.session_id, branch, version)
        finally:
            self._mutated()

    # The hooks the Agents SDK's OpenAIResponsesCompactionSession probes on the session
    # it wraps (private, duck-typed): a compaction through it is one HistoryCompacted.

    async def _atomic_replace_items(self, items: list[Any]) -> bool:
        """Replace the whole history of the current branch by ``items``, in one event
        (False, nothing done, for a subclass that overrides the Session methods)."""
        if not compaction.stores_as_given(self):
            return False
        self._check_open()
        encoded = encode_items(items)
        branch = await self.current_branch()
        try:
            await compaction.replace_shown(self._store, self.session_id, branch, encoded)
        finally:
            self._mutated()
        return True

    async def _get_compaction_snapshot(
        self, limit: int, *, prune_prefix: Callable[[Any], bool] | None = None
    ) -> Any:
        """The newest ``limit`` items, whether they are the whole history, and the
        replacement of a suffix of them in one event (False if they changed). None
        for a subclass that overrides the Session methods."""
        from agents.memory.session import _CompactionSnapshot

        if not compaction.stores_as_given(self):
            return None
        self._check_open()
        branch = await self.current_branch()
        rows, complete = await compaction.snapshot_entries(
            self._store, self.session_id, branch, check_count("limit", limit)
        )
        items = [decode_item(item) for _, item in rows]
        prune = None if prune_prefix is None else (lambda raw: prune_prefix(decode_item(raw)))

        async def replace_suffix(start: int, output: list[Any]) -> bool:
            self._check_open()
            encoded = encode_items(output)
            try:
                return await compaction.replace_suffix(
                    self._store, self.session_id, branch, rows[start:], encoded, prune
                )
            finally:
                self._mutated()

        return _CompactionSnapshot(items, complete, replace_suffix)

    def _log_cancelled(self, call: str, cancelled: BaseException | None) -> None:
        """Record, on this session's logger, how a cancelled call ended."""
        self._logger.debug(
            "session %r: %s cancelled %s",
            self.session_id,
            call,
            "after it committed"
            if isinstance(cancelled, CancelledAfterCommit)
            else "before anything was written",
        )

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Remove every item of the session (the log keeps them, as history)."""
        self._check_open()
        try:
            await self._store.append(
                self.session_id, [SessionCleared()], on_new_stream=self._preamble()
            )
        except asyncio.CancelledError as cancelled:
            self._log_cancelled("clear_session", cancelled)
            raise
        finally:
            self._mutated()

    def _mutated(self) -> None:
        """The history changed under the cancelled calls: a later call is not their retry."""
        self._cancelled_adds.clear()
        self._undelivered.clear()

    # -- lifecycle -------------------------------------------------------------------

    def _preamble(self) -> tuple[NewEvent]:
        """This object's SessionStarted event, for the append that creates the stream."""
        if self._started is None:
            started = SessionStarted(metadata={"session_class": type(self).__name__})
            self._started = (NewEvent(started, uuid.uuid4()),)
        return self._started

    def _check_open(self) -> None:
        """StoreClosedError once the session is closed."""
        if self._closed:
            # The SDK's words ("SQLiteSession is closed"), which code may match on.
            raise StoreClosedError(f"{type(self).__name__} is closed (session {self.session_id!r})")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> Closing:
        """Release what this session holds; later calls raise StoreClosedError.

        Works called plainly (``session.close()``, as with the SDK's synchronous close)
        or awaited (``await session.close()``, which also waits until the connections
        are released). Idempotent.
        """
        if self._closing is None:
            self._closed = True
            self._closing = Closing(self._release())
        return self._closing

    def _release(self) -> Coroutine[Any, Any, None] | None:
        """Let go of the store: do what can be done now, return what must be awaited."""
        return self._store.close()

    def _owns_resources(self) -> bool:
        """Whether leaking this session leaks a connection (then it warns when collected)."""
        return self._owns_store

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_closed", True) or not self._owns_resources():
            return
        warnings.warn(
            f"{self!r} was never closed: call session.close() or use 'async with'",
            ResourceWarning,
            stacklevel=2,
            source=self,
        )
        # The collector may run this in the middle of any code, even code holding a
        # lock that closing needs: so close from the loop's next turn, or (no loop)
        # only hand over what closing needs, without taking any lock here.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._closed = True
            self._abandon()
            return
        loop.call_soon(self.close)  # keeps this object alive until then

    def _abandon(self) -> None:
        """At garbage collection outside a loop: release what can be, taking no lock."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(session_id={self.session_id!r}, branch={self._branch_id!r})"

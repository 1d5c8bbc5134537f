"""SQLiteSession: the embedded default, a drop-in for the SDK's ``SQLiteSession``.

Sessions on one file share one store per process, so opening a session per request
(``SQLiteSession(user_id, "conversations.db")``) costs no connection set-up. The store
outlives its last session by :data:`IDLE_SECONDS`: a session opened on the file
meanwhile takes it over, after checking that the path still names the same file (its
device and inode) and that no process changed its tables (SQLite's schema version;
if one did, the store checks its tables and projections again, as a new store would).
A store nobody took over is closed by a timer thread (one per process), at process
exit, or by :func:`release_sqlite_files`; closing it checkpoints the WAL and removes
the ``-wal`` and ``-shm`` files. A session the garbage collector finds unclosed
outside an event loop hands its store over to be released at the next acquire or
release, since the collector may run inside the lock that guards the stores.

A child process made by ``os.fork()`` (a pre-forking server, multiprocessing's
``fork`` start method) starts with no store: the ones it inherited are forgotten, not
closed, since SQLite connections must never cross a fork and closing them in the child
could checkpoint or remove the parent's ``-wal`` file. A session on the file opens a
fresh store in the child; a session object inherited from the parent is not to be used
there (closing it lets go of nothing).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Never

from eventstore import ConfigurationError, EventStore, check_sqlite_path

from ._settings import refuse_unknown_keywords
from .base import HISTORY, StoreSession

log = logging.getLogger("convstore.sessions")

# How long (seconds) the store of a file stays open after its last session closed, for
# the next session on the file to take over. 0: closed with the last session.
IDLE_SECONDS = 10.0


def _identity(path: str) -> tuple[int, int] | None:
    """The file at ``path`` (device, inode), or None if there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


@dataclass(slots=True, eq=False)
class _Kept:
    """The store of one file, and what it is checked against when taken over idle."""

    store: EventStore
    identity: tuple[int, int] | None  # the file the store opened (None: not created yet)
    schema: object | None = None  # the schema mark when the last session let go
    idle_until: float | None = None  # while no session holds it (time.monotonic)


class _SharedStores:
    """One store per SQLite file per process, shared by every session on that file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # wakes the timer thread
        self._stores: dict[str, _Kept] = {}
        self._retired: list[EventStore] = []  # idle stores of a replaced file, to close
        self._timer: threading.Thread | None = None
        # Stores held by sessions the garbage collector found unclosed outside an event
        # loop: released at the next acquire or release, because the collector may run
        # inside this object's lock and so must not take it.
        self._abandoned: collections.deque[tuple[str, EventStore]] = collections.deque()
        # In a child made by os.fork(): the parent's stores, by id, kept referenced so
        # that nothing ever closes (nor finalises) their connections in the child.
        self._inherited: dict[int, EventStore] = {}

    def forget_after_fork(self) -> None:
        """In a child made by ``os.fork()``: forget every store the parent had, without
        closing any, and the timer thread (which did not survive the fork) with them.
        The lock is made anew: another thread of the parent may have held it."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        parents = [kept.store for kept in self._stores.values()] + self._retired
        parents += [store for _, store in self._abandoned]
        self._inherited.update((id(store), store) for store in parents)
        self._stores, self._retired = {}, []
        self._abandoned = collections.deque()
        self._timer = None

    def abandon(self, path: str, store: EventStore) -> None:
        """Release later (callable from a finaliser: takes no lock)."""
        self._abandoned.append((path, store))

    def _release_abandoned(self) -> None:
        """Release the stores handed over by ``abandon``."""
        while self._abandoned:
            try:
                path, store = self._abandoned.popleft()
            except IndexError:  # another thread took the last one
                return
            self.release(path, store)  # a store not kept is closed by its finaliser

    def acquire(self, path: str) -> EventStore:
        if self._abandoned:
            self._release_abandoned()
        with self._lock:
            kept = self._stores.get(path)
            if kept is not None and kept.idle_until is not None:
                kept = self._take_over(path, kept)
            elif kept is not None and kept.store.closed:
                kept = None
            if kept is None:
                store = EventStore(path, projectors=[HISTORY])
                kept = self._stores[path] = _Kept(store, _identity(path))
            return kept.store.share()  # a session cannot close it under the others

    def _take_over(self, path: str, kept: _Kept) -> _Kept | None:
        """``kept``, idle, for a new session if it is still the file's (under the lock)."""
        store = kept.store
        if store.closed or _identity(path) != kept.identity:
            # Deleted (and maybe created again): another database at that path.
            del self._stores[path]
            if not store.closed:
                self._retired.append(store)
                self._idle.notify()
            return None
        if kept.schema is None or store.schema_mark() != kept.schema:
            store.recheck()  # a process changed the tables meanwhile
        kept.idle_until = None
        return kept

    def release(self, path: str, store: EventStore) -> EventStore | None:
        """Drop one holder. Return the store if it must be closed now (it is not kept
        for the next session: not the file's any more, or IDLE_SECONDS is 0)."""
        if self._abandoned:
            self._release_abandoned()
        with self._lock:
            if id(store) in self._inherited:  # the parent's: never closed in a child
                return None
            if not store.unshare():
                return None
            kept = self._stores.get(path)
            if kept is None or kept.store is not store:
                return store
            if kept.identity is None:  # the store created the file
                kept.identity = _identity(path)
            if IDLE_SECONDS <= 0 or store.closed or kept.identity is None:
                del self._stores[path]
                return store
            kept.schema = store.schema_mark()
            kept.idle_until = time.monotonic() + IDLE_SECONDS
            self._start_timer()
            return None

    def _start_timer(self) -> None:
        """Start the thread that closes idle stores, or wake it (under the lock)."""
        if self._timer is None or not self._timer.is_alive():
            self._timer = threading.Thread(
                target=self._close_idle, name="convstore-sqlite-idle", daemon=True
            )
            self._timer.start()
        else:
            self._idle.notify()

    def _close_idle(self) -> None:
        """Timer thread: close each store idle for IDLE_SECONDS, as its time comes."""
        while True:
            with self._lock:
                doomed = self._take_idle(expired_only=True)
                while not doomed:
                    deadlines = [k.idle_until for k in self._stores.values() if k.idle_until]
                    wait = min(deadlines) - time.monotonic() if deadlines else None
                    self._idle.wait(None if wait is None else max(wait, 0.0))
                    doomed = self._take_idle(expired_only=True)
            _close_all(doomed)

    def _take_idle(self, *, expired_only: bool, paths: set[str] | None = None) -> list[EventStore]:
        """Remove and return the idle stores (all, or those of ``paths``; only the ones
        whose time is up), with the retired ones (under the lock)."""
        now = time.monotonic()
        taken, self._retired = self._retired, []
        for path, kept in list(self._stores.items()):
            if kept.idle_until is None or (paths is not None and path not in paths):
                continue
            if expired_only and kept.idle_until > now:
                continue
            del self._stores[path]
            taken.append(kept.store)
        return taken

    def release_idle(self, paths: set[str] | None) -> int:
        """Close the idle stores (of ``paths``) now, on this thread; return how many."""
        if self._abandoned:
            self._release_abandoned()
        with self._lock:
            doomed = self._take_idle(expired_only=False, paths=paths)
        _close_all(doomed)
        return len(doomed)


def _close_all(stores: list[EventStore]) -> None:
    for store in stores:
        try:
            store.close_blocking()
        except Exception as error:  # e.g. the file's directory is gone: nothing to keep
            log.debug("closing an idle SQLite store failed: %s", error)


_shared = _SharedStores()
atexit.register(_shared.release_idle, None)
os.register_at_fork(after_in_child=_shared.forget_after_fork)


def release_sqlite_files(*paths: str | os.PathLike[str]) -> int:
    """Close now the stores that no open session holds on these SQLite files (on every
    file, without arguments); return how many were closed.

    ``close()`` of the last session on a file keeps its store open for
    :data:`IDLE_SECONDS` so that the next session opened on the file costs no set-up;
    the store then closes by itself, or at process exit. Closing it checkpoints the WAL
    into the database file and removes the ``-wal`` and ``-shm`` files: call this
    before copying, moving or deleting a database file, or in a test that checks the
    files. A file that an open session still holds is closed after that session's
    ``close()``, in its own time. Synchronous: it waits for the connections to close.
    """
    if not paths:
        return _shared.release_idle(None)
    resolved = {str(Path(check_sqlite_path(p)).resolve()) for p in paths}
    return _shared.release_idle(resolved)


class SQLiteSession(StoreSession):
    """Conversation history in a SQLite file, or in memory (``":memory:"``, the default).

    An in-memory session has a private database that lives as long as the object.
    Sessions on the same file share one connection per process. ``db_path`` is a file
    path; for a SQLAlchemy URL use :class:`~sessions.SQLAlchemySession`.
    """

    def __init__(
        self,
        session_id: str,
        db_path: str | os.PathLike[str] = ":memory:",
        *,
        session_settings: Any = None,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        **sdk_only: Never,
    ) -> None:
        refuse_unknown_keywords(type(self), sdk_only)
        if isinstance(db_path, str) and "://" in db_path:
            raise ConfigurationError(
                f"SQLiteSession takes a file path, not a URL ({db_path!r}): "
                "use SQLAlchemySession(session_id, db_url=...) for a database URL"
            )
        self.db_path = check_sqlite_path(db_path)  # (and its directory exists)
        if self.db_path == ":memory:":
            self._shared_path: str | None = None
            super().__init__(
                session_id,
                lambda: EventStore(":memory:", projectors=[HISTORY]),
                session_settings=session_settings,
                logger=logger,
            )
        else:
            shared_path = self._shared_path = str(Path(self.db_path).resolve())
            super().__init__(
                session_id,
                lambda: _shared.acquire(shared_path),
                session_settings=session_settings,
                logger=logger,
            )

    def _release(self) -> Coroutine[Any, Any, None] | None:
        """Close a private store; drop this session's hold on a shared one."""
        if self._shared_path is None:
            return self._store.close()
        last = _shared.release(self._shared_path, self._store)
        return None if last is None else last.close()

    def _abandon(self) -> None:
        """Hand a shared store over for release (a private one goes with the object)."""
        if self._shared_path is not None:
            _shared.abandon(self._shared_path, self._store)

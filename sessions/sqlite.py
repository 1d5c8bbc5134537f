"""SQLiteSession: the embedded default, a drop-in for the SDK's ``SQLiteSession``.

Sessions on one file share one store per process, so opening a session per request
(``SQLiteSession(user_id, "conversations.db")``) costs no connection set-up; the store
closes when its last session closes. A session the garbage collector finds unclosed
outside an event loop hands its store over to be released at the next acquire or
release, since the collector may run inside the lock that guards the stores.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Never

from eventstore import ConfigurationError, EventStore, check_sqlite_path

from ._settings import refuse_unknown_keywords
from .base import HISTORY, StoreSession


class _SharedStores:
    """One store per SQLite file per process, shared by every session on that file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, EventStore] = {}
        # Stores held by sessions the garbage collector found unclosed outside an event
        # loop: released at the next acquire or release, because the collector may run
        # inside this object's lock and so must not take it.
        self._abandoned: collections.deque[tuple[str, EventStore]] = collections.deque()

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
            self.release(path, store)  # the last holder's store is closed by its finaliser

    def acquire(self, path: str) -> EventStore:
        if self._abandoned:
            self._release_abandoned()
        with self._lock:
            store = self._stores.get(path)
            if store is None or store.closed:
                store = self._stores[path] = EventStore(path, projectors=[HISTORY])
            return store.share()  # a session cannot close it under the others

    def release(self, path: str, store: EventStore) -> EventStore | None:
        """Drop one holder; return the store if no session holds it any more (to close)."""
        if self._abandoned:
            self._release_abandoned()
        with self._lock:
            if not store.unshare():
                return None
            if self._stores.get(path) is store:
                del self._stores[path]
            return store


_shared = _SharedStores()


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

"""What wakes a reader tailing the log: the base :class:`ChangeSignal`, which this
process's own appends poke; the backends subclass it with their own notice
(``backends/postgres.py``: ``LISTEN``; ``backends/sqlite.py``: the data version).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any, ClassVar


class ChangeSignal:
    """How a reader tailing the log (:mod:`eventstore.subscribe`) learns that the log
    may have grown, so it reads again at once instead of at its next poll.

    This base class is woken only by :meth:`poke`: the appends of this process (the
    store pokes every signal of the database after a write commits) and, in
    subclasses, a backend's own notice (PostgreSQL ``LISTEN``; SQLite's data version).
    Whatever wakes it, a reader also reads after each poll interval, so a notice
    that never comes (a writer killed, a connection pooler that drops ``LISTEN``)
    delays it by one interval at most, and never loses an event.

    A reader takes :meth:`mark` *before* it reads, then calls :meth:`wait` with that
    mark: a change that lands between the read and the wait is not missed.
    """

    # How often wait() asks the backend itself (changed()); None: never.
    check_interval: ClassVar[float | None] = None
    # The poll interval of a reader that does not choose one: short where nothing
    # else wakes it across processes (MariaDB), a safety net where something does.
    default_poll_interval: ClassVar[float] = 0.25

    def __init__(self) -> None:
        self._pokes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None

    async def open(self) -> None:
        """Start listening (called once, in the event loop that will wait)."""
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()

    async def close(self) -> None:
        """Stop listening and release what :meth:`open` took. Idempotent."""

    def poke(self) -> None:
        """Wake the reader (from any thread)."""
        self._pokes += 1
        loop, woken = self._loop, self._woken
        if loop is None or woken is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            woken.set()
        else:
            with suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(woken.set)

    def mark(self) -> Any:
        """Where things stand now (take it before reading the log)."""
        return self._pokes

    def changed(self, mark: Any) -> bool:
        """Whether anything happened since ``mark`` was taken."""
        return bool(self._pokes != mark)

    async def wait(self, mark: Any, seconds: float) -> bool:
        """Return when something happened since ``mark`` (True), or after ``seconds``
        (False)."""
        woken = self._woken
        if woken is None:
            raise RuntimeError("ChangeSignal.wait before open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            woken.clear()
            if self.changed(mark):
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            step = left if self.check_interval is None else min(left, self.check_interval)
            with suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), step)

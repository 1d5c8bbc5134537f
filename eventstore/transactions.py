"""Running a store's transactions: retries, and what the process knows of a database.

:class:`Transactions` runs a transaction function on the store's runner and retries
what is safe to retry: a deadlock or a busy database (any transaction: nothing of it
was written), and a lost connection when it broke before the commit, or the function
only reads, or it is idempotent (an append: a second copy of its event ids is a
no-op). A lock timeout is never retried: it is the bound the caller set.

A lost connection is retried for up to ``RECONNECT_SECONDS`` with pauses growing from
the first of ``RECONNECT_PAUSES`` to the second (a server restarting, shutting down,
or a standby being promoted comes back meanwhile; each retry takes a fresh connection,
SQLAlchemy discarding the pool's connections older than the one found dead), once
this process has reached the database: before that, a refused connection is more
likely a wrong address and is raised at once. Once an attempt may have committed, any
error that ends the retries is a :class:`ConnectionLostError` with ``outcome_unknown``
(the error that ended them is its cause): never an error that reads as "nothing was
written".
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from . import registry
from .backends.base import Runner, T, TxFunction
from .errors import ConnectionLostError, OperationalError, TransientError
from .subscribe import wake_subscribers

log = logging.getLogger("convstore.eventstore")

# A transaction taking longer than this is logged (at debug level).
SLOW_SECONDS = 0.5
TRANSIENT_RETRIES = 12
RECONNECT_PAUSES = (0.05, 1.0)
RECONNECT_SECONDS = 10.0


@dataclass(slots=True)
class DatabaseState:
    """What this process knows of one database, shared by every store on it:
    components whose tables are checked, and its live projections (valid while its
    generation is unchanged)."""

    components: set[tuple[str, int]] = field(default_factory=set)
    live: registry.LiveSet | None = None
    # Whether a transaction of this process has run there: a connection lost after
    # that is a server restarting (worth waiting for); before it, more likely a wrong
    # address, reported at once.
    reached: bool = False


# Per database: an engine, or a SQLite file's path (which a new store revalidates with
# one quick read, since the file may have been deleted and created again).
_state_by_engine: weakref.WeakKeyDictionary[Any, DatabaseState] = weakref.WeakKeyDictionary()
_state_by_key: dict[object, DatabaseState] = {}


def database_state(key: object) -> DatabaseState:
    """The state of the database ``key`` names (a runner's ``engine_key``)."""
    try:
        return _state_by_engine.setdefault(key, DatabaseState())
    except TypeError:  # not weakly referenceable (a SQLite file key)
        return _state_by_key.setdefault(key, DatabaseState())


class Transactions:
    """Runs transaction functions on ``runner``, retrying what is safe to retry."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.state = database_state(runner.engine_key)

    async def run(
        self, fn: TxFunction[T], *, write: bool, quick: bool = False, idempotent: bool = False
    ) -> T:
        """Run ``fn`` in one transaction, retrying as the module docstring says."""
        state = self.state
        transient = 0
        lost_since: float | None = None
        pause = RECONNECT_PAUSES[0]
        unknown = False  # an attempt broke while committing: it may have committed
        while True:
            started = time.perf_counter()
            try:
                result = await self.runner.run(fn, write=write, quick=quick)
            except TransientError as error:
                transient += 1
                if transient == TRANSIENT_RETRIES:
                    log.warning("giving up after %d attempts: %s", transient, error)
                    _raise_outcome_unknown(unknown, error)
                    raise
                log.debug("retrying (attempt %d) after a transient error: %s", transient, error)
                await asyncio.sleep(random.uniform(0, 0.002 * 2**transient))
                continue
            except ConnectionLostError as error:
                if not state.reached or (error.outcome_unknown and write and not idempotent):
                    raise
                unknown = unknown or error.outcome_unknown
                now = time.monotonic()
                lost_since = now if lost_since is None else lost_since
                if now + pause - lost_since > RECONNECT_SECONDS:
                    log.warning(
                        "giving up after %.1f s without a working connection: %s",
                        now - lost_since,
                        error,
                    )
                    _raise_outcome_unknown(unknown and not error.outcome_unknown, error)
                    raise
                log.debug("retrying in %.2f s after a lost connection: %s", pause, error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_PAUSES[1])
                continue
            except OperationalError as error:  # e.g. a lock timeout in a retry
                _raise_outcome_unknown(unknown, error)
                raise
            state.reached = True
            elapsed = time.perf_counter() - started
            if elapsed > SLOW_SECONDS:
                log.debug("slow %s transaction: %.3f s", "write" if write else "read", elapsed)
            if lost_since is not None:
                log.info(
                    "connection to the database working again after %.3f s",
                    time.monotonic() - lost_since,
                )
            if write:  # (a dictionary look-up when nobody subscribes)
                wake_subscribers(self.runner.database_id)
            return result


def _raise_outcome_unknown(unknown: bool, error: Exception) -> None:
    """If an earlier attempt may have committed, raise that instead of ``error``."""
    if unknown:
        raise ConnectionLostError(
            f"{error} (after an earlier attempt lost its connection while committing: "
            "it may or may not have committed)",
            outcome_unknown=True,
        ) from error

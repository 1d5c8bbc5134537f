"""The key tables and expiry of encrypted sessions, as functions for scripts and the CLI.

``shred_session`` and ``purge_expired`` need no master key: a retention job or an
erasure request can run without it. ``rotate_master_key`` needs the old and the new key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import (
    MAIN_BRANCH,
    EventStore,
    InvalidArgumentError,
    ItemsExpired,
    NotEncryptedError,
    PersistenceError,
    is_number,
)

from . import _keys
from ._envelope import Envelope, parse_envelope
from ._keys import parse_master_key
from .base import HISTORY

# Events of the key tables (never key material nor content): creation, races, rotation,
# shredding, expiry.
LOG = logging.getLogger("convstore.encryption")

Target = EventStore | str | os.PathLike[str] | AsyncEngine

_tables_ready: weakref.WeakSet[EventStore] = weakref.WeakSet()


async def ensure_key_tables(store: EventStore) -> None:
    """Create ``convstore_master_key`` and ``convstore_data_keys`` if they are missing."""
    if store in _tables_ready:
        return

    def create(conn: Connection) -> None:
        _keys.metadata.create_all(conn)

    try:
        await store.run(create, write=True)
    except PersistenceError:  # another process created them at the same moment
        await store.run(create, write=True)
    _tables_ready.add(store)


def open_store(target: Target) -> tuple[EventStore, bool]:
    """The store for ``target``, and whether the caller opened it (and must close it)."""
    if isinstance(target, EventStore):
        return target, False
    return EventStore(target, projectors=[HISTORY]), True


async def shred_session(
    store_or_target: Target, session_id: str, *, key_store: Target | None = None
) -> bool:
    """Destroy the data key of ``session_id`` (crypto-shredding). Needs no master key.

    ``key_store`` names the key database when the keys do not live beside the log.
    Returns False if the key was shredded already. A session that never had a key gets
    a tombstone, so it cannot be encrypted (nor read) under that id later.
    """
    target = store_or_target if key_store is None else key_store
    store, owned = open_store(target)
    try:
        await ensure_key_tables(store)
        now = time.time_ns() // 1000
        shredded = await store.run(lambda conn: _keys.shred_tx(conn, session_id, now), write=True)
        if shredded:
            LOG.info("session %r: data key shredded", session_id)
        return shredded
    finally:
        if owned:
            await store.close()


async def purge_expired(
    store_or_target: Target,
    session_id: str,
    *,
    ttl: float,
    branch_id: str = MAIN_BRANCH,
    now: float | None = None,
) -> int:
    """Record that the items of a branch sealed ``ttl`` seconds or more before ``now``
    expired: one ItemsExpired event; return how many items it removed from the history.

    Only the oldest run of expired envelopes is expired (the bound is a key in the log);
    a plaintext item stops the run. Needs no master key: the timestamps are readable,
    and authenticated when the items are read.
    """
    if not is_number(ttl) or ttl < 0:
        raise InvalidArgumentError(f"ttl must be a number of seconds >= 0, not {ttl!r}")
    cutoff = int((time.time() if now is None else now) * 1000) - int(ttl * 1000)
    store, owned = open_store(store_or_target)
    try:
        entries = await store.run(
            lambda conn: HISTORY.read_entries(conn, session_id, branch_id, None)
        )
        bound, count = None, 0
        for seq, raw in entries:
            try:
                envelope: Envelope = parse_envelope(raw, session_id)
            except NotEncryptedError:
                break
            if envelope.ts > cutoff:
                break
            bound, count = seq, count + 1
        if bound is None:
            return 0
        # Safe without a lock: keys only grow, so later items are never below the bound.
        await store.append(session_id, [ItemsExpired(upto_seq=bound, branch_id=branch_id)])
        LOG.info("session %r: %d items expired on branch %r", session_id, count, branch_id)
        return count
    finally:
        if owned:
            await store.close()


async def rotate_master_key(
    key_store: Target, old_master_key: str | bytes, new_master_key: str | bytes
) -> int:
    """Re-wrap every data key of the key table in ``key_store`` under a new master key
    (what :meth:`EncryptedSession.rotate_key` does, for scripts); return how many."""
    old = parse_master_key(old_master_key, what="old_master_key")
    new = parse_master_key(new_master_key, what="new_master_key")
    store, owned = open_store(key_store)
    try:
        await ensure_key_tables(store)
        params = await store.run(_keys.read_master_tx, quick=True)
        if params is None:
            return 0
        old_kek = await asyncio.to_thread(_keys.open_kek, old, params)
        new_params, new_kek = await asyncio.to_thread(_keys.new_kek, new)
        now = time.time_ns() // 1000
        count = await store.run(
            lambda conn: _keys.rotate_tx(conn, params, old_kek, new_params, new_kek, now),
            write=True,
        )
        LOG.info(
            "rotated the master key: %d data keys re-wrapped under %s", count, new_params.key_id
        )
        return count
    finally:
        if owned:
            await store.close()

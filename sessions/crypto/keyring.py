"""The key ring: the data keys of one key table, opened with one master key.

:class:`KeyRing` is what an encrypted session asks for the cipher of its items. It
creates a session's data key on first use (and the table's master key row before the
first data key), unwraps data keys under the key-encryption key (KEK), re-wraps them
all under a new master key (rotation), and keeps what is costly to derive: the KEK of
the master key row (scrypt is slow on purpose) and the cipher of the last data key it
opened, and the process keeps the ciphers of the data keys it opened
(:class:`_OpenedKeys`), so that a session object made per request does not unwrap its
key again. The functions below serve scripts and the command line: ``shred_session``
needs no master key, so an erasure request can run without it; ``rotate_master_key``
needs the old and the new one.

Races are settled by the key tables' primary keys: two writers creating the master
key row or a session's data key at once both insert, one insert fails, and the loser
uses the winner's row. A rotation that commits between reading a data key row and
reading the master key row is noticed (the row names the old KEK) and the row is read
again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from eventstore import (
    EventStore,
    IntegrityError,
    KeyNotFoundError,
    KeyShreddedError,
    NotEncryptedError,
    PersistenceError,
    TamperedError,
)

from ..base import HISTORY
from .cipher import AesGcm, Cipher
from .envelope import ItemCipher
from .keys import (
    DataKeyRow,
    KekParams,
    MasterKey,
    new_data_key_row,
    new_kek,
    open_kek,
    parse_master_key,
    unwrap,
)
from .tables import (
    insert_data_key_tx,
    insert_master_tx,
    metadata,
    read_data_key_tx,
    read_master_tx,
    rotate_tx,
    shred_tx,
)

# Events of the key tables (never key material nor content): creation, races, rotation,
# shredding, expiry.
LOG = logging.getLogger("convstore.encryption")

Target = EventStore | str | os.PathLike[str] | AsyncEngine

_tables_ready: weakref.WeakSet[EventStore] = weakref.WeakSet()

# How many opened data keys the process keeps (see _OpenedKeys).
OPENED_KEYS = 1024


class _OpenedKeys:
    """The ciphers of the data keys this process opened, by (master key, data key row).

    A session object made per request opens its key from here, with no read of the
    master key row and no unwrapping. Only the very row that was opened matches: a
    shredded or rotated key is another row (its wrapped key, its master key id), which
    every read and write reads afresh in its own transaction, so the cached cipher of
    the old row is never used again; and another master key never matches. The newest
    :data:`OPENED_KEYS` are kept; ``shred`` and ``rotate`` drop what they made stale.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: OrderedDict[tuple[bytes, DataKeyRow], ItemCipher] = OrderedDict()

    def get(self, master: MasterKey, row: DataKeyRow) -> ItemCipher | None:
        key = (master.material, row)
        with self._lock:
            cipher = self._found.get(key)
            if cipher is not None:
                self._found.move_to_end(key)
            return cipher

    def put(self, master: MasterKey, row: DataKeyRow, cipher: ItemCipher) -> None:
        with self._lock:
            self._found[(master.material, row)] = cipher
            while len(self._found) > OPENED_KEYS:
                self._found.popitem(last=False)

    def drop(self, session_id: str | None = None) -> None:
        """Forget the keys of ``session_id`` (of every session, without one)."""
        with self._lock:
            if session_id is None:
                self._found.clear()
                return
            for key in [k for k in self._found if k[1].stream_id == session_id]:
                del self._found[key]

    def after_fork(self) -> None:
        """In a child made by ``os.fork()``: a new lock, since another thread of the
        parent may have held this one at the fork. The opened keys stay valid (each
        message draws its own random nonce, so parent and child never share one)."""
        self._lock = threading.Lock()


_opened = _OpenedKeys()
os.register_at_fork(after_in_child=_opened.after_fork)


def _now() -> int:
    """The time as the key tables date their rows: microseconds since the epoch."""
    return time.time_ns() // 1000


def no_key(session_id: str) -> KeyNotFoundError:
    """The error for encrypted items whose session has no data key in this table."""
    return KeyNotFoundError(
        f"session {session_id!r} holds encrypted items but no data key: the key "
        "table is not the one they were written with"
    )


async def ensure_key_tables(store: EventStore) -> None:
    """Create ``convstore_master_key`` and ``convstore_data_keys`` if they are missing."""
    if store in _tables_ready:
        return

    def create(conn: Connection) -> None:
        metadata.create_all(conn)

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


class KeyRing:
    """The data keys in the key tables of ``store``, under the master key ``master``."""

    def __init__(self, store: EventStore, master: MasterKey) -> None:
        self.store = store
        self._master = master
        self._kek: tuple[KekParams, Cipher] | None = None
        self._opened: tuple[DataKeyRow, ItemCipher] | None = None

    async def ready(self) -> None:
        """Create the key tables if they are missing (once per store and process)."""
        await ensure_key_tables(self.store)

    async def read(self, session_id: str) -> DataKeyRow | None:
        """The data key row of ``session_id``, or None if it has none."""
        return await self.store.run(lambda conn: read_data_key_tx(conn, session_id), quick=True)

    async def cipher(self, row: DataKeyRow) -> ItemCipher:
        """The cipher of the data key in ``row``: KeyShreddedError for a shredded key,
        WrongKeyError for another master key, TamperedError for a damaged row."""
        if self._opened is not None and self._opened[0] == row:
            return self._opened[1]
        cached = _opened.get(self._master, row)
        if cached is not None:
            self._opened = (row, cached)
            return cached
        if row.wrapped is None:
            raise KeyShreddedError(f"session {row.stream_id!r}: its data key was shredded")
        params = await self.store.run(read_master_tx, quick=True)
        if params is not None and params.key_id != row.master_key_id:
            # A rotation committed between reading the row and the master key: the row
            # read again is wrapped under the master key just read.
            fresh = await self.read(row.stream_id)
            if fresh is not None and fresh != row and fresh.wrapped is not None:
                row = fresh
        if params is None:
            raise no_key(row.stream_id)
        if params.key_id != row.master_key_id:
            raise TamperedError(
                f"session {row.stream_id!r}: its data key names a master key "
                f"{row.master_key_id!r} this key table does not have"
            )
        kek = await self._open_kek(params)
        cipher = ItemCipher(row.stream_id, row.key_id, AesGcm(unwrap(kek, row)))
        self._opened = (row, cipher)
        _opened.put(self._master, row, cipher)
        return cipher

    async def create(
        self, session_id: str, holds_plaintext: Callable[[], Awaitable[bool]]
    ) -> DataKeyRow:
        """A new data key for ``session_id`` (or the one a concurrent writer made first).

        The master key is checked first (a wrong one creates nothing); then a session
        whose log ``holds_plaintext`` is refused with NotEncryptedError, since its items
        would mix plaintext and ciphertext.
        """
        params = await self._master_params()
        kek = await self._open_kek(params)  # a wrong master key stops here
        if await holds_plaintext():
            found = await self.read(session_id)  # a concurrent writer encrypted it meanwhile?
            if found is not None:
                return found
            raise NotEncryptedError(
                f"session {session_id!r} already holds unencrypted items: encrypting "
                "it now would mix plaintext and ciphertext; use a new session id"
            )
        row = new_data_key_row(kek, params.key_id, session_id)
        now = _now()
        try:
            await self.store.run(lambda conn: insert_data_key_tx(conn, row, now), write=True)
        except IntegrityError:  # a concurrent writer made it first: use theirs
            LOG.debug("session %r: another writer created its data key first", session_id)
            found = await self.read(session_id)
            assert found is not None
            return found
        return row

    async def rotate(self, new_master: MasterKey) -> int:
        """Re-wrap every data key of the table under ``new_master``, in one transaction
        (items are not touched); return how many. From then on this ring, and no one
        with the old master key, opens them."""
        await self.ready()
        params = await self.store.run(read_master_tx, quick=True)
        if params is None:  # nothing encrypted yet: the new key simply becomes the key
            self._master = new_master
            return 0
        old_kek = await self._open_kek(params)
        new_params, new_kek_ = await asyncio.to_thread(new_kek, new_master)
        now = _now()
        count = await self.store.run(
            lambda conn: rotate_tx(conn, params, old_kek, new_params, new_kek_, now),
            write=True,
        )
        self._master = new_master
        self._kek = (new_params, new_kek_)
        self._opened = None
        _opened.drop()  # every row of the table changed
        LOG.info(
            "rotated the master key: %d data keys re-wrapped under %s", count, new_params.key_id
        )
        return count

    def forget(self) -> None:
        """Drop the cipher of the last data key opened (it was shredded, or is closing)."""
        self._opened = None

    async def _master_params(self) -> KekParams:
        """The table's master key row, created from this ring's master key if missing."""
        params = await self.store.run(read_master_tx, quick=True)
        if params is not None:
            return params
        fresh, fresh_kek = await asyncio.to_thread(new_kek, self._master)
        now = _now()
        try:
            await self.store.run(lambda conn: insert_master_tx(conn, fresh, now), write=True)
        except IntegrityError:  # another writer made the table's master key first
            LOG.debug("another writer created the master key row first")
            params = await self.store.run(read_master_tx, quick=True)
            if params is None:
                raise KeyNotFoundError(
                    "the master key row vanished while it was being made"
                ) from None
            return params
        self._kek = (fresh, fresh_kek)
        LOG.info("created the master key row %s (%s)", fresh.key_id, fresh.kdf)
        return fresh

    async def _open_kek(self, params: KekParams) -> Cipher:
        """The KEK of ``params`` under this ring's master key (WrongKeyError if not)."""
        if self._kek is not None and self._kek[0] == params:
            return self._kek[1]
        if params.kdf == "scrypt":  # slow on purpose: not on the event loop
            kek = await asyncio.to_thread(open_kek, self._master, params)
        else:
            kek = open_kek(self._master, params)
        self._kek = (params, kek)
        return kek


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
        now = _now()
        shredded = await store.run(lambda conn: shred_tx(conn, session_id, now), write=True)
        _opened.drop(session_id)  # (the row changed: no read would match it again)
        if shredded:
            LOG.info("session %r: data key shredded", session_id)
        return shredded
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
        return await KeyRing(store, old).rotate(new)
    finally:
        if owned:
            await store.close()

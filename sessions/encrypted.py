"""EncryptedSession: any convstore session, with its items sealed before they are stored.

Envelope encryption (:mod:`sessions.crypto`): each session has a random data key, kept
wrapped by a key derived from the master key; the session asks its
:class:`~sessions.crypto.keyring.KeyRing` for the cipher of that key, and seals items
(:mod:`sessions.crypto.envelope`) before they enter an event, so neither the log nor
any projection holds plaintext. Failures are loud: a wrong master key, a damaged
envelope, a missing or shredded data key raise a :class:`DecryptionError` subclass and
change nothing. ``shred()`` destroys the data key (crypto-shredding); ``rotate_key()``
re-wraps every data key under a new master key; ``purge_expired()`` records the expiry
of items older than ``ttl`` as an event.

The session wraps another through that session's public API only: the Session
protocol, and what :class:`StoreSession` and :class:`BranchingSession` offer to
wrappers (``current_branch``, ``stored_turns``, ``pop_decided``, ``undelivered_pop``,
``remembers_cancelled_adds``). It reads the stored envelopes from the history
projection itself, since the wrapped session would decode them as items. What the
wrapped session offers beyond that is passed through only when convstore's own classes
do not define it (the first class of its MRO that has the name decides): a user's
subclass's methods, and the branch methods, which need no content.

Reads and pops. When the keys live in the session's database, a read takes the data
key row and the items in one transaction, and a pop checks, under the session's lock,
that the key row has not changed since it opened the key; then it opens the newest
unexpired item and only then names it for removal, so a wrong or shredded key removes
nothing. A retried ``add_items`` after a cancellation sends the same envelopes as the
cancelled call (sealing again would give new nonces), as long as the wrapped session
still remembers that call; else it is a new add.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import msgspec
from sqlalchemy import Connection

from eventstore import (
    MAIN_BRANCH,
    ArgumentTypeError,
    BranchError,
    ConfigurationError,
    Event,
    EventStore,
    InvalidArgumentError,
    ItemPopped,
    ItemsExpired,
    NotEncryptedError,
    SerializationError,
    StoreClosedError,
    TransientError,
    TurnNotFoundError,
    check_count,
    check_stream_id,
    decode_item,
    encode_items,
    is_number,
)
from projections.history_table import Turn

from ._encrypted_compaction import EncryptedCompaction
from ._settings import resolve_limit
from ._tracing import instrument
from .base import (
    HISTORY,
    QUICK_READ,
    REMEMBERED_CANCELLATIONS,
    Closing,
    StoreSession,
    preparing,
)
from .branching import BranchingSession, conversation_turns, text_matcher, turns_containing
from .crypto.envelope import Envelope, ItemCipher, check_distinct, parse_envelope
from .crypto.keyring import LOG, KeyRing, Target, no_key, open_store, shred_session
from .crypto.keys import DataKeyRow, parse_master_key
from .crypto.tables import read_data_key_tx

__all__ = ["EncryptedSession", "purge_expired"]

# Methods of an Advanced session that need no item content, offered as they are.
_BRANCH_METHODS = frozenset(
    {
        "create_branch_from_turn",
        "create_branch_from_item",
        "switch_to_branch",
        "delete_branch",
        "list_branches",
        "get_branch_tree",
        # Usage holds token counts, never content.
        "get_session_usage",
        "get_turn_usage",
        "get_usage_stats",
        "store_run_usage",
    }
)


def _convstore_defines(cls: type, name: str) -> bool:
    """Whether convstore's own session classes, not a user's subclass, define ``name``."""
    package = StoreSession.__module__.partition(".")[0]  # "sessions", or its alias
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass.__module__.partition(".")[0] == package
    return False


def _now_ms(clock: Callable[[], float]) -> int:
    """The time ``clock`` gives, in milliseconds (an envelope's ``ts``)."""
    return int(clock() * 1000)


class _KeyChanged(Exception):
    """The data key row changed between reading it and the pop's transaction."""


@instrument  # OpenTelemetry spans, when installed (sessions/_tracing.py)
class EncryptedSession(EncryptedCompaction):
    """A convstore session whose items are encrypted (AES-256-GCM) before storage.

    Both call forms work: ``EncryptedSession(session=base, encryption_key=..., ttl=3600)``
    and the SDK's ``EncryptedSession(session_id=..., underlying_session=base,
    encryption_key=..., ttl=...)``. ``encryption_key`` is 32 bytes, the URL-safe base64
    of 32 bytes, or a passphrase of at least 16 characters (scrypt). ``ttl`` (seconds,
    default 600 as in the SDK; None for never) hides older items. ``key_store`` puts the
    wrapped keys in another database (a store, path or URL) instead of the session's.
    ``clock`` (seconds since the epoch, ``time.time`` by default) dates sealed items and
    decides expiry; tests and simulations pass their own.
    """

    def __init__(
        self,
        session_id: str | None = None,
        underlying_session: StoreSession | None = None,
        encryption_key: str | bytes | None = None,
        ttl: float | None = 600,
        max_scan_items: int | None = None,
        *,
        session: StoreSession | None = None,
        key_store: Target | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_scan_items is not None:
            raise ArgumentTypeError(
                "max_scan_items is not taken: get_items(limit=n) reads the newest n items and "
                "reads further back only past expired ones; bound the work with limit= and "
                "purge_expired(), which removes expired items from the history"
            )
        if (session is None) == (underlying_session is None):
            raise ConfigurationError("give exactly one of session= or underlying_session=")
        base = session if session is not None else underlying_session
        if not isinstance(base, StoreSession):
            raise _not_a_convstore_session(base)
        if session_id is not None and session_id != base.session_id:
            raise ConfigurationError(
                f"session_id {session_id!r} differs from the wrapped session's {base.session_id!r}"
            )
        if ttl is not None and not (is_number(ttl) and ttl > 0):
            raise InvalidArgumentError(f"ttl must be a number of seconds > 0 or None, not {ttl!r}")
        if encryption_key is None:
            raise ConfigurationError("encryption_key is required")
        if not callable(clock):
            raise ArgumentTypeError(
                f"clock must be a function returning the time in seconds, like time.time "
                f"(the default), not {clock!r}"
            )
        master = parse_master_key(encryption_key)
        self.underlying_session = base
        self.session_id = base.session_id
        self.ttl = ttl
        self._clock = clock
        keys, self._owns_key_store = (
            (base.store, False) if key_store is None else open_store(key_store)
        )
        self._keys = KeyRing(keys, master)
        self._same_store = keys is base.store
        # add_items calls that were cancelled, newest last: (data key, items, envelopes).
        self._cancelled_seals: list[tuple[str, tuple[msgspec.Raw, ...], list[Any]]] = []
        self._closed = False
        self._closing: Closing | None = None

    # -- attributes ------------------------------------------------------------------

    @property
    def session_settings(self) -> Any:
        return self.underlying_session.session_settings

    @session_settings.setter
    def session_settings(self, value: Any) -> None:
        self.underlying_session.session_settings = value

    @property
    def store(self) -> EventStore:
        """The event store of the wrapped session (which holds only ciphertext)."""
        return self.underlying_session.store

    @property
    def key_store(self) -> EventStore:
        """The store whose database holds the wrapped keys."""
        return self._keys.store

    # -- the Session protocol ----------------------------------------------------------

    async def get_items(
        self,
        limit: int | None = None,
        branch_id: str | None = None,
        *,
        turns: int | None = None,
        wrapper: Any = None,
    ) -> list[Any]:
        """The unexpired items, oldest first; with ``limit``, the newest ``limit`` of them.

        ``branch_id`` (an Advanced session underneath) reads another branch; ``turns=n``
        the last ``n`` whole turns, as stored, leaving out their expired items.
        """
        self._check_open()
        n = resolve_limit(limit, self.session_settings)
        branch = await self._branch_of(branch_id)
        if n == 0:
            return []
        await self._ready()
        if turns is not None:
            return await self._read_turns(branch, turns, n)
        window = n
        while True:
            row, raws = await self._read(branch, window)
            if not raws:
                return []
            envelopes = self._parse(raws)
            cipher = await self._cipher_of(row)
            cutoff = self._cutoff()
            valid = [e for e in envelopes if e.ts > cutoff]
            if n is not None and len(valid) >= n:
                return [cipher.open(e) for e in valid[-n:]]
            if window is None or len(raws) < window:
                return [cipher.open(e) for e in valid]
            # Expired items took places in the window: read further back. When the oldest
            # read is expired, the rest usually is too (until purge_expired records it):
            # read it all at once rather than window by window.
            window = None if envelopes[0].ts <= cutoff else window * 2

    async def _read_turns(self, branch: str, turns: int, n: int | None) -> list[Any]:
        """The unexpired items of the last ``turns`` turns, at most the newest ``n``."""
        if check_count("turns", turns) == 0:
            return []
        sid = self.session_id
        raws = await self.store.run(
            lambda conn: HISTORY.read_last_turns(conn, sid, branch, turns, None)
        )
        if not raws:
            return []
        envelopes = self._parse(raws)
        cipher = await self._cipher_of(await self._read_key())
        cutoff = self._cutoff()
        valid = [e for e in envelopes if e.ts > cutoff]
        if n is not None:
            valid = valid[len(valid) - n :] if n else []
        return [cipher.open(e) for e in valid]

    def _parse(self, raws: Sequence[bytes]) -> list[Envelope]:
        """The envelopes stored as ``raws``, each one once (else TamperedError)."""
        envelopes = [parse_envelope(raw, self.session_id) for raw in raws]
        check_distinct(envelopes, self.session_id)
        return envelopes

    @property
    def added_events(self) -> int:
        """How many events the last add_items appended."""
        return self.underlying_session.added_events

    async def add_items(self, items: list[Any], *, wrapper: Any = None) -> None:
        """Seal each item and add the envelopes to the wrapped session."""
        self._check_open()
        if not items:
            return
        with preparing():  # a key committed here is not the caller's items
            await self._ready()
            cipher = await self._cipher_of(await self._read_key(), create=True)
        sealed = self._sealed_before(cipher, items)
        if sealed is None:
            ts = _now_ms(self._clock)
            sealed = [cipher.seal(item, ts, where=f"items[{i}]") for i, item in enumerate(items)]
        try:
            await self.underlying_session.add_items(sealed, wrapper=wrapper)
        except asyncio.CancelledError:
            # The retry must send the same envelopes, which the session underneath then
            # recognises as its cancelled call's (sealing again would differ: new nonces).
            self._cancelled_seals.append((cipher.key_id, encode_items(items), sealed))
            del self._cancelled_seals[:-REMEMBERED_CANCELLATIONS]
            raise

    def _sealed_before(self, cipher: ItemCipher, items: list[Any]) -> list[Any] | None:
        """The envelopes of a remembered cancelled add_items of exactly these items."""
        if not self.underlying_session.remembers_cancelled_adds:
            self._cancelled_seals.clear()
            return None
        if not self._cancelled_seals:
            return None
        try:
            encoded = encode_items(items)
        except SerializationError:
            return None  # sealing refuses it, with the item's place
        for n, (key_id, was_items, sealed) in enumerate(self._cancelled_seals):
            if key_id == cipher.key_id and was_items == encoded:
                del self._cancelled_seals[n]
                return sealed
        return None

    async def pop_item(self, *, wrapper: Any = None) -> Any | None:
        """Remove and return the newest unexpired item, or None (expired items stay hidden).

        The item is decrypted inside the transaction that removes it, after the key was
        checked: a wrong key, a shredded key or a damaged envelope raises and removes
        nothing.
        """
        self._check_open()
        with preparing():  # the key tables made here are not the caller's pop
            await self._ready()
        branch = await self._branch_of(None)
        base = self.underlying_session
        undelivered = base.undelivered_pop(branch)  # the retry of a cancelled pop
        if undelivered is not None:
            return decode_item(undelivered)
        for _ in range(3):
            row = await self._read_key()
            cipher = None if row is None else await self._cipher_of(row)
            try:
                # A cancellation after the commit hands out the plaintext item, as a
                # plain session's pop does (and its retry returns it again).
                return await base.pop_decided(
                    branch,
                    self._decide_pop(branch, row, cipher),
                    lambda item: encode_items([item])[0],
                )
            except _KeyChanged:
                continue
        raise TransientError(
            f"session {self.session_id!r}: its data key row kept changing during pop_item"
        )

    def _decide_pop(
        self, branch_id: str, row: DataKeyRow | None, cipher: ItemCipher | None
    ) -> Callable[[Connection, int], tuple[Sequence[Event], Any] | None]:
        """What ``pop_item`` runs under the session's lock (see the module docstring)."""
        sid = self.session_id

        def take_newest(conn: Connection, version: int) -> tuple[Sequence[Event], Any] | None:
            if self._same_store and read_data_key_tx(conn, sid) != row:
                raise _KeyChanged
            top = HISTORY.read_top(conn, sid, branch_id)
            if top is None:
                return None
            cutoff = self._cutoff()
            entries = [top]
            if parse_envelope(top[1], sid).ts <= cutoff:  # expired: find the newest valid one
                entries = HISTORY.read_entries(conn, sid, branch_id, None)
            for seq, raw in reversed(entries):
                envelope = parse_envelope(raw, sid)
                if envelope.ts <= cutoff:
                    continue
                if cipher is None:
                    raise no_key(sid)
                return [ItemPopped(seq=seq, branch_id=branch_id)], cipher.open(envelope)
            return None  # every item is expired

        return take_newest

    async def clear_session(self, *, wrapper: Any = None) -> None:
        """Remove every item (the log keeps their ciphertext, and the key stays)."""
        self._check_open()
        await self.underlying_session.clear_session(wrapper=wrapper)

    # -- an Advanced session underneath: branches and turns ---------------------------

    def __getattr__(self, name: str) -> Any:
        """What the session underneath offers, as the SDK's EncryptedSession delegates:
        the methods a subclass of it adds (e.g. ``get_stats``), and the branch methods
        of an Advanced session, which need no content (``create_branch_from_turn``,
        ``switch_to_branch``, ``list_branches``, ...; turns are numbered from the
        envelopes' user marks). Refused: private names, and the rest of convstore's own
        session API, which would read ciphertext as if it were items (``get_tool_usage``,
        ``get_conversation_by_turns``, ...) or bypass the encryption (``store``)."""
        base = self.__dict__.get("underlying_session")
        if base is not None and not name.startswith("_"):
            if name in _BRANCH_METHODS:
                if isinstance(base, BranchingSession):
                    return getattr(base, name)
            elif not _convstore_defines(type(base), name):
                return getattr(base, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    async def _decrypted_turns(self, branch_id: str | None) -> list[tuple[Turn, Any]]:
        """The unexpired user turns of a branch, each with its decrypted message."""
        self._check_open()
        base = self._advanced()
        await self._ready()
        turns = await base.stored_turns(branch_id)
        if not turns:
            return []
        cipher = await self._cipher_of(await self._read_key())
        cutoff = self._cutoff()
        envelopes = [(turn, parse_envelope(turn.item, self.session_id)) for turn in turns]
        return [(turn, cipher.open(e)) for turn, e in envelopes if e.ts > cutoff]

    async def get_conversation_turns(self, branch_id: str | None = None) -> list[dict[str, Any]]:
        """Each unexpired user turn, decrypted in process, in the SDK's shape."""
        return conversation_turns(await self._decrypted_turns(branch_id))

    async def find_turns_by_content(
        self, search_term: str, branch_id: str | None = None
    ) -> list[dict[str, Any]]:
        """User turns whose text contains ``search_term`` (ignoring the case of ASCII
        letters, as the SDK does), searched after decryption, in process: the database
        never sees the term nor the text."""
        self._advanced()
        matches = text_matcher(search_term)
        return turns_containing(await self._decrypted_turns(branch_id), matches)

    async def create_branch_from_content(
        self, search_term: str, branch_name: str | None = None
    ) -> str:
        """A new branch from the first user turn whose text contains ``search_term``."""
        matches = await self.find_turns_by_content(search_term)
        if not matches:
            raise TurnNotFoundError(f"No user turns found containing '{search_term}'")
        created: str = await self._advanced().create_branch_from_turn(
            matches[0]["turn"], branch_name
        )
        return created

    def _advanced(self) -> BranchingSession:
        """The wrapped session, which must be an Advanced one (else ArgumentTypeError)."""
        base = self.underlying_session
        if not isinstance(base, BranchingSession):
            raise ArgumentTypeError(
                "branches and turns need an Advanced session underneath "
                f"(AdvancedSQLiteSession, AdvancedSQLAlchemySession), not {type(base).__name__}"
            )
        return base

    async def open_stored(self, stored: Sequence[bytes]) -> list[Any]:
        """The items sealed in ``stored``: envelopes as the log or the history holds
        them (e.g. the items of an ``ItemsAdded`` event), decrypted in this process,
        expired ones too (for tools that show the log, such as ``convstore DB serve``).
        Raises as reads do: a wrong key, a shredded key, a damaged envelope."""
        self._check_open()
        if not stored:
            return []
        await self._ready()
        envelopes = [parse_envelope(raw, self.session_id) for raw in stored]
        cipher = await self._cipher_of(await self._read_key())
        return [cipher.open(e) for e in envelopes]

    # -- keys, expiry, shredding -------------------------------------------------------

    async def rotate_key(self, new_master_key: str | bytes) -> int:
        """Re-wrap every data key of the key table under ``new_master_key``.

        Covers every session whose keys live in this key table (one master key per
        table), in one transaction; items are not re-encrypted. Afterwards the old
        master key opens nothing; this session uses the new one. Returns the number of
        data keys re-wrapped.
        """
        self._check_open()
        new = parse_master_key(new_master_key, what="new_master_key")
        return await self._keys.rotate(new)

    async def shred(self) -> bool:
        """Destroy this session's data key: its items can never be decrypted again.

        Reads then raise :class:`KeyShreddedError`, and so do writes: the session id is
        spent. Other sessions and the log (whose hash chain covers the ciphertext) are
        untouched. Returns False if the key was shredded already.
        """
        self._check_open()
        self._keys.forget()
        return await shred_session(self._keys.store, self.session_id)

    async def purge_expired(self) -> int:
        """Record the expiry of the items older than ``ttl`` on the current branch (one
        ItemsExpired event); return how many expired. Does not need the key."""
        self._check_open()
        if self.ttl is None:
            return 0
        return await purge_expired(
            self.store,
            self.session_id,
            ttl=self.ttl,
            branch_id=await self._branch_of(None),
            now=self._clock(),
        )

    # -- internals -------------------------------------------------------------------

    def _cutoff(self) -> int:
        """Items sealed at or before this time (ms) are expired."""
        if self.ttl is None:
            return -(1 << 62)
        return _now_ms(self._clock) - int(self.ttl * 1000)

    async def _ready(self) -> None:
        """Create the key tables if they are missing."""
        await self._keys.ready()

    async def _branch_of(self, branch_id: str | None) -> str:
        """``branch_id`` (checked), or the wrapped session's current branch."""
        base = self.underlying_session
        if branch_id is None:
            return await base.current_branch()
        if not isinstance(base, BranchingSession):
            raise ArgumentTypeError(
                "branch_id= needs an Advanced session underneath "
                f"(AdvancedSQLiteSession, AdvancedSQLAlchemySession), not {type(base).__name__}"
            )
        return check_stream_id(branch_id, what="a branch id", error=BranchError)

    async def _read(
        self, branch_id: str, window: int | None
    ) -> tuple[DataKeyRow | None, list[bytes]]:
        """The data key row and the newest ``window`` stored items of a branch."""
        sid = self.session_id

        def read(conn: Connection) -> tuple[DataKeyRow | None, list[bytes]]:
            row = read_data_key_tx(conn, sid) if self._same_store else None
            return row, HISTORY.read_items(conn, sid, branch_id, window)

        quick = window is not None and window <= QUICK_READ
        row, raws = await self.store.run(read, quick=quick)
        if not self._same_store and raws:
            row = await self._read_key()
        return row, raws

    async def _read_key(self) -> DataKeyRow | None:
        """This session's data key row, or None if it has none."""
        return await self._keys.read(self.session_id)

    async def _cipher_of(self, row: DataKeyRow | None, *, create: bool = False) -> ItemCipher:
        """The cipher of ``row``'s data key; ``create`` makes one if the session has none."""
        if row is None:
            if not create:
                raise no_key(self.session_id)
            row = await self._keys.create(self.session_id, self._holds_plaintext)
        return await self._keys.cipher(row)

    async def _holds_plaintext(self) -> bool:
        """Whether the session's log has items added before encryption was turned on."""
        # Asked of the log (the projection forgets popped items).
        return await self.store.has_event(self.session_id, "ItemsAdded")

    # -- lifecycle -------------------------------------------------------------------

    def _check_open(self) -> None:
        """StoreClosedError once this session or the one it wraps is closed."""
        if self._closed or self.underlying_session.closed:
            raise StoreClosedError(f"session {self.session_id!r} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> Closing:
        """Close the wrapped session (and a key store this session opened). Idempotent.

        Works called plainly (``session.close()``, as the SDK's EncryptedSession passes
        ``close()`` on to its synchronous session) or awaited, like the wrapped session's.
        """
        if self._closing is None:
            self._closed = True
            self._keys.forget()
            self._closing = Closing(self._release())
        return self._closing

    async def _release(self) -> None:
        """Close the wrapped session, and the key store if this session opened it."""
        await self.underlying_session.close()
        if self._owns_key_store:
            await self._keys.store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"EncryptedSession({self.underlying_session!r}, ttl={self.ttl!r})"


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
    if not (is_number(ttl) and ttl >= 0):
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
                envelope = parse_envelope(raw, session_id)
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


def _not_a_convstore_session(base: object) -> ConfigurationError:
    """The error for wrapping something else, naming the import that fixes it."""
    cls = type(base)
    if not cls.__module__.startswith("agents."):
        return ConfigurationError(
            "EncryptedSession wraps one of convstore's sessions (from sessions import "
            f"SQLiteSession, SQLAlchemySession, ...), not {cls.__qualname__}"
        )
    # The SDK's class, under the shortest module path that exports it (agents.memory,
    # agents.extensions.memory) rather than the file that defines it.
    parts = cls.__module__.split(".")
    public = next(
        (
            path
            for path in (".".join(parts[:n]) for n in range(2, len(parts) + 1))
            if getattr(sys.modules.get(path), cls.__name__, None) is cls
        ),
        cls.__module__,
    )
    sdk = (
        "EncryptedSession wraps one of convstore's sessions, and this is the Agents "
        f"SDK's {cls.__name__} ({public})"
    )
    from . import __all__ as ours  # here: the package imports this module first

    if cls.__name__ not in ours:
        return ConfigurationError(
            f"{sdk}, which convstore has no counterpart of: keep the conversation in "
            "convstore's SQLiteSession or SQLAlchemySession (from sessions import ...)"
        )
    return ConfigurationError(
        f"{sdk}: switch the import to `from sessions import {cls.__name__}` (in place of "
        f"`from {public} import {cls.__name__}`); history the SDK stored moves over with "
        "'convstore DB import-sdk' (docs/migrating.md)"
    )

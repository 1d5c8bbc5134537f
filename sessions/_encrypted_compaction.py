"""Compaction of an :class:`~sessions.encrypted.EncryptedSession`'s history.

The same events as a plain session's (:mod:`sessions.compaction`), on envelopes: the
replaced envelopes are opened in this process for the summariser (expired ones stay
hidden from it), the summary is sealed like any item, and the items kept after the
run are copied as the envelopes they are (their nonces stay their identity). The
history projection sees only envelopes, whose user marks still number the turns.
Also the private hooks the Agents SDK's ``OpenAIResponsesCompactionSession`` probes,
so that the SDK's compaction over an encrypted session is one event, sealed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec

from eventstore import decode_item, encode_items

from . import compaction
from .compaction import CompactionResult
from .crypto.envelope import parse_envelope

if TYPE_CHECKING:
    from .encrypted import EncryptedSession

__all__ = ["EncryptedCompaction"]


def _me(session: object) -> EncryptedSession:
    """The EncryptedSession this mixin is part of (for the type checker)."""
    return cast("EncryptedSession", session)


class EncryptedCompaction:
    """The compaction methods of :class:`~sessions.encrypted.EncryptedSession`."""

    async def compact(
        self,
        *,
        summarize: Any,
        keep_last_turns: int | None = None,
        keep_last_items: int | None = None,
    ) -> CompactionResult | None:
        """:meth:`sessions.base.StoreSession.compact`, on sealed items: the summariser
        sees the plaintext of the unexpired replaced items, in this process only; the
        summary is sealed before it is stored."""
        _me(self)._check_open()
        await _me(self)._ready()
        branch = await _me(self)._branch_of(None)
        return await compaction.compact_stored(
            _me(self).store,
            _me(self).session_id,
            branch,
            summarize=summarize,
            keep_last_turns=keep_last_turns,
            keep_last_items=keep_last_items,
            open_items=_me(self)._open_unexpired,
            seal=_me(self)._seal,
        )

    async def revert_compaction(self, version: int | None = None) -> CompactionResult:
        """Undo the newest compaction of the current branch (the replaced envelopes are
        shown again as they were stored)."""
        _me(self)._check_open()
        branch = await _me(self)._branch_of(None)
        return await compaction.revert_compaction(
            _me(self).store, _me(self).session_id, branch, version
        )

    async def _open_unexpired(self, stored: list[bytes]) -> list[Any]:
        """The plaintext of the unexpired envelopes among ``stored``."""
        envelopes = _me(self)._parse(stored)
        cutoff = _me(self)._cutoff()
        valid = [e for e in envelopes if e.ts > cutoff]
        if not valid:
            return []
        cipher = await _me(self)._cipher_of(await _me(self)._read_key())
        return [cipher.open(e) for e in valid]

    async def _seal(self, items: list[Any]) -> tuple[msgspec.Raw, ...]:
        """``items`` sealed (a data key made if the session has none), as stored."""
        encode_items(items)  # SerializationError for an item that is not JSON, first
        cipher = await _me(self)._cipher_of(await _me(self)._read_key(), create=True)
        ts = int(_me(self)._clock() * 1000)
        return encode_items(
            [cipher.seal(item, ts, where=f"items[{i}]") for i, item in enumerate(items)]
        )

    # -- the hooks the SDK's OpenAIResponsesCompactionSession probes -------------------

    async def _atomic_replace_items(self, items: list[Any]) -> bool:
        """Replace the whole history by ``items``, sealed, in one event (False for a
        subclass that overrides the Session methods)."""
        if not compaction.stores_as_given(self):
            return False
        _me(self)._check_open()
        await _me(self)._ready()
        sealed = await _me(self)._seal(items) if items else ()
        branch = await _me(self)._branch_of(None)
        await compaction.replace_shown(_me(self).store, _me(self).session_id, branch, sealed)
        return True

    async def _read_compaction_items(
        self, limit: int | None, *, wrapper: Any = None
    ) -> tuple[list[Any], bool]:
        """The items compaction may see (unexpired, decrypted) and whether they are
        the whole history (reads may hide expired items, so the SDK asks here)."""
        if limit is None:
            return await _me(self).get_items(), False
        _me(self)._check_open()
        await _me(self)._ready()
        branch = await _me(self)._branch_of(None)
        rows, complete = await compaction.snapshot_entries(
            _me(self).store, _me(self).session_id, branch, limit
        )
        return await _me(self)._open_unexpired([item for _, item in rows]), complete

    async def _get_compaction_snapshot(
        self, limit: int, *, prune_prefix: Callable[[Any], bool] | None = None
    ) -> Any:
        """The newest ``limit`` stored items, decrypted (expired ones left out), and
        the replacement of a suffix of them, sealed, in one event; the expired items
        before it are expired in the same append."""
        from agents.memory.session import _CompactionSnapshot

        if not compaction.stores_as_given(self):
            return None
        _me(self)._check_open()
        await _me(self)._ready()
        branch = await _me(self)._branch_of(None)
        rows, complete = await compaction.snapshot_entries(
            _me(self).store, _me(self).session_id, branch, limit
        )
        cutoff, sid = _me(self)._cutoff(), _me(self).session_id
        positions = [n for n, (_, raw) in enumerate(rows) if parse_envelope(raw, sid).ts > cutoff]
        items = await _me(self)._open_unexpired([item for _, item in rows])

        def expired(raw: bytes) -> bool:
            envelope = parse_envelope(raw, sid)
            if envelope.ts <= cutoff:
                return True
            return prune_prefix is not None and bool(prune_prefix(decode_item(raw)))

        async def replace_suffix(start: int, output: list[Any]) -> bool:
            _me(self)._check_open()
            if start >= len(items):
                return False
            raw_start = 0 if start == 0 else positions[start]
            sealed = await _me(self)._seal(output) if output else ()
            suffix: Sequence[tuple[int, bytes]] = rows[raw_start:]
            return await compaction.replace_suffix(
                _me(self).store, sid, branch, suffix, sealed, expired
            )

        return _CompactionSnapshot(items, complete, replace_suffix)

"""Sealed items: what an encrypted session stores in place of each item.

An item is stored as an ordinary JSON dict, so it passes through the codec, the log and
the projections unchanged::

    {"__convstore_encrypted__": 1, "kid": "<data key id>", "ts": <sealed at, ms>,
     "iv": "<96-bit random nonce, base64>", "ct": "<AES-256-GCM ciphertext + tag, base64>",
     "role": "user"}

``role`` is present only on user messages, and is the one thing about an item's content
left readable: it marks where turns start, so the history projection numbers turns,
``get_items(turns=n)`` and ``create_branch_from_turn`` work on ciphertext, as they do
without encryption (the projection classifies items by a top-level ``role``).

The plaintext is the item's exact JSON (``encode_item``), so it round-trips byte for
byte. The associated data binds the format, the session id, the data key id, the
timestamp and the role marker: an envelope copied into another session, or with its
timestamp moved (to escape expiry) or its marker changed, fails authentication. The
random nonce is the item's identity (a repeated nonce within a read is reported as
tampering), so it must be exactly the nonce: the cipher seals nonce and ciphertext as
one message, and an ``iv`` of another length (bytes moved over from ``ct``) would
otherwise open as a second item. What cannot be bound is the item's slot: its key in
the log is assigned by the append, after sealing, so reordering envelopes *within* one
session is caught by the log's hash chain (``audit``) and by ``verify``, not by
decryption.
"""

from __future__ import annotations

import binascii
from typing import Any

import msgspec

from eventstore import KeyNotFoundError, NotEncryptedError, TamperedError, decode_item, encode_item

from .cipher import NONCE_BYTES, Cipher
from .keys import FORMAT

MARKER = "__convstore_encrypted__"
USER = "user"

_encode = msgspec.json.Encoder().encode


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A stored envelope, as decoded (see the module docstring)."""

    format: int = msgspec.field(name=MARKER)
    kid: str
    ts: int
    iv: str
    ct: str
    role: str | None = None


_envelope_decoder = msgspec.json.Decoder(Envelope)
_any_decoder = msgspec.json.Decoder()


def parse_envelope(raw: bytes, session_id: str) -> Envelope:
    """The envelope stored as ``raw``: NotEncryptedError for a plaintext item,
    TamperedError for a damaged envelope."""
    try:
        envelope = _envelope_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        try:
            value = _any_decoder.decode(raw)
        except msgspec.DecodeError:
            value = None
        if isinstance(value, dict) and MARKER in value:
            raise TamperedError(f"session {session_id!r}: a stored envelope is malformed") from None
        raise NotEncryptedError(
            f"session {session_id!r} holds an item that is not encrypted: history written "
            "before encryption was turned on, or through the session underneath"
        ) from None
    if envelope.role not in (None, USER):
        raise TamperedError(f"session {session_id!r}: a stored envelope has a bad role marker")
    if envelope.format != FORMAT:
        raise TamperedError(
            f"session {session_id!r}: envelope format {envelope.format} is not one this "
            f"release reads ({FORMAT})"
        )
    return envelope


def _aad(session_id: str, key_id: str, ts: int, role: str | None) -> bytes:
    """What an envelope binds (see the module docstring)."""
    return _encode([MARKER, FORMAT, session_id, key_id, ts, role])


class ItemCipher:
    """Seals and opens the items of one session with the cipher of its data key."""

    def __init__(self, session_id: str, key_id: str, cipher: Cipher) -> None:
        self.session_id = session_id
        self.key_id = key_id
        self._cipher = cipher

    def seal(self, item: Any, ts: int, *, where: str = "item") -> dict[str, Any]:
        """The envelope of ``item`` (refused with SerializationError if not exact JSON)."""
        plaintext = bytes(encode_item(item, where=where))
        role = USER if isinstance(item, dict) and item.get("role") == USER else None
        sealed = self._cipher.encrypt(plaintext, _aad(self.session_id, self.key_id, ts, role))
        envelope = {
            MARKER: FORMAT,
            "kid": self.key_id,
            "ts": ts,
            "iv": binascii.b2a_base64(sealed[:NONCE_BYTES], newline=False).decode("ascii"),
            "ct": binascii.b2a_base64(sealed[NONCE_BYTES:], newline=False).decode("ascii"),
        }
        if role is not None:
            envelope["role"] = role
        return envelope

    def open(self, envelope: Envelope) -> Any:
        """The item sealed in ``envelope`` (TamperedError if it fails authentication)."""
        if envelope.kid != self.key_id:
            raise KeyNotFoundError(
                f"session {self.session_id!r}: an item is sealed with data key "
                f"{envelope.kid!r}, but the session's key is {self.key_id!r}"
            )
        aad = _aad(self.session_id, envelope.kid, envelope.ts, envelope.role)
        try:
            nonce = binascii.a2b_base64(envelope.iv, strict_mode=True)
            sealed = binascii.a2b_base64(envelope.ct, strict_mode=True)
        except ValueError:  # binascii.Error: not base64
            raise self._tampered() from None
        if len(nonce) != NONCE_BYTES:  # else bytes moved from ``ct`` would pass as a new item
            raise self._tampered()
        try:
            plaintext = self._cipher.decrypt(nonce + sealed, aad)
        except TamperedError:
            raise self._tampered() from None
        return decode_item(plaintext)

    def _tampered(self) -> TamperedError:
        """The error for an envelope that fails authentication."""
        return TamperedError(
            f"session {self.session_id!r}: an encrypted item fails authentication "
            "(changed, or copied from another session)"
        )


def check_distinct(envelopes: list[Envelope], session_id: str) -> None:
    """TamperedError if one sealed item appears twice (a replayed envelope)."""
    if len({e.iv for e in envelopes}) != len(envelopes):
        raise TamperedError(f"session {session_id!r}: the same encrypted item appears twice")

"""The cipher strategy: authenticated encryption with associated data under one key.

Everything an encrypted session seals goes through a :class:`Cipher`: each item (under
its session's data key, :mod:`sessions.crypto.envelope`), each data key (wrapped under
the key-encryption key) and the verifier that tells a wrong master key apart
(:mod:`sessions.crypto.keys`). The rest of the code never calls a cryptographic
primitive, only ``encrypt`` and ``decrypt``, in the manner of the ``Cipher`` of
pyeventsourcing or the ``EncryptionBackend`` of advanced-alchemy.

A sealed message is the nonce followed by the ciphertext and its tag: that is the form
the key tables store (``convstore_data_keys.wrapped``, ``convstore_master_key.verifier``);
an item's envelope stores the nonce and the rest apart (``iv``, ``ct``). ``decrypt``
raises :class:`~eventstore.TamperedError` for anything that fails authentication (a
changed byte, other associated data, another key, a truncated message); callers that
know what it means (a wrong master key, a damaged wrapped key) say so in their words.
"""

from __future__ import annotations

import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventstore import TamperedError

NONCE_BYTES = 12  # AES-GCM's 96-bit nonce, random per message


class Cipher(Protocol):
    """Seals and opens messages under one key, binding associated data to each."""

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        """The sealed form of ``plaintext``: a fresh nonce, the ciphertext and its tag."""
        ...

    def decrypt(self, sealed: bytes, associated_data: bytes) -> bytes:
        """The plaintext sealed in ``sealed``; TamperedError if it fails authentication."""
        ...


class AesGcm:
    """AES-256-GCM with a random 96-bit nonce per message: the cipher of format 1."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, sealed: bytes, associated_data: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
            raise TamperedError("a sealed message fails authentication") from None

"""Encryption of session items, apart from the sessions that use it.

- :mod:`~sessions.crypto.cipher`: the :class:`Cipher` strategy (encrypt and decrypt
  with associated data) and its AES-256-GCM implementation, the one place that calls a
  cryptographic primitive;
- :mod:`~sessions.crypto.keys`: master keys, the key-encryption key derived from one,
  wrapping and unwrapping data keys (CPU work only);
- :mod:`~sessions.crypto.tables`: the key tables and the transactions on them;
- :mod:`~sessions.crypto.keyring`: :class:`KeyRing`, which creates, opens, rotates and
  caches a key table's data keys for a session, and the functions for scripts
  (``shred_session``, ``rotate_master_key``);
- :mod:`~sessions.crypto.envelope`: what an encrypted item is stored as, and the
  :class:`ItemCipher` that seals and opens items with a session's data key.

:class:`~sessions.EncryptedSession` (``sessions/encrypted.py``) puts them together.
"""

"""The keys of encrypted sessions: master key, key-encryption key, data keys.

Envelope encryption. Each session has a random 256-bit *data key* that seals its items.
Data keys are stored *wrapped* (sealed by a :class:`~sessions.crypto.cipher.Cipher`)
under a *key-encryption key* (KEK) derived from the user's master key; how the KEK is
derived (KDF, salt, cost) and a verifier that tells a wrong master key apart from a
damaged data key are stored beside them (:mod:`sessions.crypto.tables`).

A master key is one of:

* ``bytes`` of length 32: used as is (HKDF-SHA256 with a stored random salt gives the KEK);
* a ``str`` that is URL-safe base64 of exactly 32 bytes (``Fernet.generate_key()`` form,
  padding optional): the 32 bytes, as above;
* any other ``str`` of at least 16 characters: a passphrase, stretched with scrypt
  (n=2**15, r=8, p=1, 16-byte random salt; the parameters are stored with the salt).

A wrapped key is bound to its session: copied onto another session's row, it does not
open. Everything here is CPU work, synchronous. A KEK is cached per process once derived:
scrypt is slow on purpose (docs/encryption.md gives its cost), which is also why
callers on an event loop derive it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from eventstore import InvalidKeyError, KeyShreddedError, TamperedError, WrongKeyError

from .cipher import AesGcm, Cipher

FORMAT = 1  # version of the key formats (rows and wrapping) and of the item envelope
KEY_BYTES = 32
MIN_PASSPHRASE = 16
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1

_encode = msgspec.json.Encoder().encode


# -- the master key ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A master key as given by the user (its material never appears in a repr)."""

    material: bytes = field(repr=False)
    kind: Literal["raw", "passphrase"]


def parse_master_key(value: object, *, what: str = "encryption_key") -> MasterKey:
    """``value`` as a master key, or :class:`InvalidKeyError` saying what is accepted."""
    if isinstance(value, bytes | bytearray):
        if len(value) != KEY_BYTES:
            raise InvalidKeyError(
                f"{what} as bytes must be exactly {KEY_BYTES} bytes, not {len(value)}"
            )
        return MasterKey(bytes(value), "raw")
    if not isinstance(value, str):
        raise InvalidKeyError(f"{what} must be a str or 32 bytes, not {type(value).__name__}")
    if not value:
        raise InvalidKeyError(f"{what} is empty")
    raw = _urlsafe_key(value)
    if raw is not None:
        return MasterKey(raw, "raw")
    if len(value) < MIN_PASSPHRASE:
        raise InvalidKeyError(
            f"{what} is too short: a passphrase needs at least {MIN_PASSPHRASE} characters "
            f"(got {len(value)}); or give 32 random bytes, or their URL-safe base64"
        )
    return MasterKey(value.encode("utf-8"), "passphrase")


def _urlsafe_key(text: str) -> bytes | None:
    """The 32 bytes ``text`` encodes in URL-safe base64 (padding optional), else None."""
    if len(text.rstrip("=")) != 43:  # 32 bytes are 43 characters unpadded
        return None
    try:
        raw = base64.b64decode(text.rstrip("=") + "=", altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == KEY_BYTES else None


# -- the key-encryption key ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KekParams:
    """How the KEK is derived from the master key (the ``convstore_master_key`` row)."""

    key_id: str
    kdf: str
    salt: bytes
    log2_n: int
    r: int
    p: int
    verifier: bytes


_kek_cache: dict[tuple[bytes, str, bytes, int, int, int], bytes] = {}
_kek_lock = threading.Lock()
_KEK_CACHE_SIZE = 64


def derive_kek(master: MasterKey, params: KekParams) -> bytes:
    """The KEK of ``master`` under ``params`` (cached: scrypt is slow on purpose)."""
    cache_key = (master.material, params.kdf, params.salt, params.log2_n, params.r, params.p)
    with _kek_lock:
        found = _kek_cache.get(cache_key)
    if found is not None:
        return found
    if params.kdf == "scrypt":
        kek = Scrypt(
            salt=params.salt, length=KEY_BYTES, n=1 << params.log2_n, r=params.r, p=params.p
        ).derive(master.material)
    elif params.kdf == "hkdf-sha256":
        kek = HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_BYTES,
            salt=params.salt,
            info=b"convstore key-encryption key v1",
        ).derive(master.material)
    else:
        raise TamperedError(f"the master key row names an unknown KDF {params.kdf!r}")
    with _kek_lock:
        if len(_kek_cache) >= _KEK_CACHE_SIZE:
            _kek_cache.pop(next(iter(_kek_cache)))
        _kek_cache[cache_key] = kek
    return kek


def _verifier_aad(key_id: str) -> bytes:
    """What the verifier binds: the KEK's id."""
    return _encode(["convstore master key check", FORMAT, key_id])


def new_kek(master: MasterKey) -> tuple[KekParams, Cipher]:
    """Fresh KEK parameters (new id, salt and verifier) for ``master``, and the KEK."""
    key_id = os.urandom(16).hex()
    if master.kind == "passphrase":
        kdf, log2_n, r, p = "scrypt", SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P
    else:
        kdf, log2_n, r, p = "hkdf-sha256", 0, 0, 0
    params = KekParams(key_id, kdf, os.urandom(16), log2_n, r, p, b"")
    kek = AesGcm(derive_kek(master, params))
    verifier = kek.encrypt(b"", _verifier_aad(key_id))
    return KekParams(key_id, kdf, params.salt, log2_n, r, p, verifier), kek


def open_kek(master: MasterKey, params: KekParams) -> Cipher:
    """The KEK, once the verifier proves ``master`` is the right key (else WrongKeyError)."""
    kek = AesGcm(derive_kek(master, params))
    try:
        kek.decrypt(params.verifier, _verifier_aad(params.key_id))
    except TamperedError:
        raise WrongKeyError(
            "the encryption key is not the master key this key table was written with"
        ) from None
    return kek


# -- data keys ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataKeyRow:
    """A session's row in ``convstore_data_keys``."""

    stream_id: str
    key_id: str
    master_key_id: str | None
    wrapped: bytes | None
    shredded_at: int | None


def _wrap_aad(stream_id: str, key_id: str, master_key_id: str) -> bytes:
    """What a wrapped key binds: its session, its id and the KEK's id."""
    return _encode(["convstore data key", FORMAT, stream_id, key_id, master_key_id])


def wrap(kek: Cipher, master_key_id: str, stream_id: str, key_id: str, data_key: bytes) -> bytes:
    """``data_key`` sealed under the KEK, as ``convstore_data_keys.wrapped`` stores it."""
    return kek.encrypt(data_key, _wrap_aad(stream_id, key_id, master_key_id))


def unwrap(kek: Cipher, row: DataKeyRow) -> bytes:
    """The data key of ``row`` (whose KEK the caller has verified)."""
    if row.wrapped is None or row.master_key_id is None:
        raise KeyShreddedError(f"session {row.stream_id!r}: its data key was shredded")
    try:
        return kek.decrypt(row.wrapped, _wrap_aad(row.stream_id, row.key_id, row.master_key_id))
    except TamperedError:
        raise TamperedError(
            f"session {row.stream_id!r}: its wrapped data key fails authentication "
            "(changed, or copied from another session)"
        ) from None


def new_data_key_row(kek: Cipher, master_key_id: str, stream_id: str) -> DataKeyRow:
    """A new random data key for ``stream_id``, wrapped under the KEK."""
    data_key = os.urandom(KEY_BYTES)
    key_id = os.urandom(8).hex()
    wrapped = wrap(kek, master_key_id, stream_id, key_id, data_key)
    return DataKeyRow(stream_id, key_id, master_key_id, wrapped, None)

"""The keys of encrypted sessions: master key, key-encryption key, data keys.

Envelope encryption. Each session has a random 256-bit *data key* that seals its items.
Data keys are stored *wrapped* (AES-256-GCM) by a *key-encryption key* (KEK) derived
from the user's master key, in ``convstore_data_keys``; how the KEK is derived (KDF,
salt, cost) and a verifier that tells a wrong master key apart from a damaged data key
live in the one row of ``convstore_master_key``. Both tables sit in a database of the
caller's choice: the session's own by default, or a separate key database.

A master key is one of:

* ``bytes`` of length 32: used as is (HKDF-SHA256 with a stored random salt gives the KEK);
* a ``str`` that is URL-safe base64 of exactly 32 bytes (``Fernet.generate_key()`` form,
  padding optional): the 32 bytes, as above;
* any other ``str`` of at least 16 characters: a passphrase, stretched with scrypt
  (n=2**15, r=8, p=1, 16-byte random salt; the parameters are stored with the salt).

Everything here is synchronous: ``*_tx`` functions run inside a store transaction, the
rest is CPU work (key derivation is cached per process, scrypt costs ~0.1 s).
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)

from eventstore import InvalidKeyError, KeyShreddedError, TamperedError, WrongKeyError
from eventstore.prepared import Prepared
from eventstore.schema import MYSQL_TABLE_OPTIONS, Blob, StreamId

FORMAT = 1  # version of the key formats (rows and wrapping) and of the item envelope
KEY_BYTES = 32
NONCE_BYTES = 12
MIN_PASSPHRASE = 16
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1
MASTER_ROW = "master"

_encode = msgspec.json.Encoder().encode

metadata = MetaData()

master_key = Table(
    "convstore_master_key",
    metadata,
    Column("name", String(16), primary_key=True),  # one row: MASTER_ROW
    Column("key_id", String(32), nullable=False),  # changes with every rotation
    Column("format", SmallInteger, nullable=False),
    Column("kdf", String(16), nullable=False),  # "hkdf-sha256" or "scrypt"
    Column("salt", Blob, nullable=False),
    Column("log2_n", Integer, nullable=False),  # scrypt cost (0 for hkdf)
    Column("r", Integer, nullable=False),
    Column("p", Integer, nullable=False),
    Column("verifier", Blob, nullable=False),  # nonce + GCM tag of nothing, under the KEK
    Column("created_at", BigInteger, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

data_keys = Table(
    "convstore_data_keys",
    metadata,
    Column("stream_id", StreamId, primary_key=True),
    Column("key_id", String(32), nullable=False),  # the envelope's "kid"
    Column("format", SmallInteger, nullable=False),
    Column("master_key_id", String(32), nullable=True),  # the KEK that wraps it
    Column("wrapped", Blob, nullable=True),  # nonce + data key sealed by the KEK; NULL: shredded
    Column("created_at", BigInteger, nullable=False),
    Column("shredded_at", BigInteger, nullable=True),
    **MYSQL_TABLE_OPTIONS,
)


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
    return _encode(["convstore master key check", FORMAT, key_id])


def new_kek(master: MasterKey) -> tuple[KekParams, bytes]:
    """Fresh KEK parameters (new id and salt) for ``master``, and the KEK."""
    key_id = os.urandom(16).hex()
    if master.kind == "passphrase":
        kdf, log2_n, r, p = "scrypt", SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P
    else:
        kdf, log2_n, r, p = "hkdf-sha256", 0, 0, 0
    params = KekParams(key_id, kdf, os.urandom(16), log2_n, r, p, b"")
    kek = derive_kek(master, params)
    nonce = os.urandom(NONCE_BYTES)
    verifier = nonce + AESGCM(kek).encrypt(nonce, b"", _verifier_aad(key_id))
    return KekParams(key_id, kdf, params.salt, log2_n, r, p, verifier), kek


def open_kek(master: MasterKey, params: KekParams) -> bytes:
    """The KEK, once the verifier proves ``master`` is the right key (else WrongKeyError)."""
    kek = derive_kek(master, params)
    nonce, sealed = params.verifier[:NONCE_BYTES], params.verifier[NONCE_BYTES:]
    try:
        AESGCM(kek).decrypt(nonce, sealed, _verifier_aad(params.key_id))
    except InvalidTag:
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
    # The session id is bound: a wrapped key copied to another session does not open.
    return _encode(["convstore data key", FORMAT, stream_id, key_id, master_key_id])


def wrap(kek: bytes, master_key_id: str, stream_id: str, key_id: str, data_key: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    aad = _wrap_aad(stream_id, key_id, master_key_id)
    return nonce + AESGCM(kek).encrypt(nonce, data_key, aad)


def unwrap(kek: bytes, row: DataKeyRow) -> bytes:
    """The data key of ``row`` (whose KEK the caller has verified)."""
    if row.wrapped is None or row.master_key_id is None:
        raise KeyShreddedError(f"session {row.stream_id!r}: its data key was shredded")
    aad = _wrap_aad(row.stream_id, row.key_id, row.master_key_id)
    try:
        return AESGCM(kek).decrypt(row.wrapped[:NONCE_BYTES], row.wrapped[NONCE_BYTES:], aad)
    except InvalidTag:
        raise TamperedError(
            f"session {row.stream_id!r}: its wrapped data key fails authentication "
            "(changed, or copied from another session)"
        ) from None


def new_data_key_row(kek: bytes, master_key_id: str, stream_id: str) -> tuple[DataKeyRow, bytes]:
    data_key = AESGCM.generate_key(bit_length=256)
    key_id = os.urandom(8).hex()
    wrapped = wrap(kek, master_key_id, stream_id, key_id, data_key)
    return DataKeyRow(stream_id, key_id, master_key_id, wrapped, None), data_key


# -- transactions on the key tables ------------------------------------------------------


def _params(row: Any) -> KekParams:
    return KekParams(
        row.key_id, row.kdf, bytes(row.salt), row.log2_n, row.r, row.p, bytes(row.verifier)
    )


def read_master_tx(conn: Connection) -> KekParams | None:
    row = conn.execute(select(master_key).where(master_key.c.name == MASTER_ROW)).first()
    return None if row is None else _params(row)


def insert_master_tx(conn: Connection, params: KekParams, now: int) -> None:
    """Insert the master key row (IntegrityError if another writer inserted one first)."""
    conn.execute(
        insert(master_key).values(
            name=MASTER_ROW,
            key_id=params.key_id,
            format=FORMAT,
            kdf=params.kdf,
            salt=params.salt,
            log2_n=params.log2_n,
            r=params.r,
            p=params.p,
            verifier=params.verifier,
            created_at=now,
        )
    )


_READ_DATA_KEY = Prepared(
    select(
        data_keys.c.key_id, data_keys.c.master_key_id, data_keys.c.wrapped, data_keys.c.shredded_at
    ).where(data_keys.c.stream_id == bindparam("sid"))
)


def read_data_key_tx(conn: Connection, stream_id: str) -> DataKeyRow | None:
    """The session's data key row (a prepared statement: it runs before every call)."""
    row = _READ_DATA_KEY.first(conn, {"sid": stream_id})
    if row is None:
        return None
    key_id, master_key_id, wrapped, shredded_at = row
    wrapped = None if wrapped is None else bytes(wrapped)
    return DataKeyRow(stream_id, key_id, master_key_id, wrapped, shredded_at)


def insert_data_key_tx(conn: Connection, row: DataKeyRow, now: int) -> None:
    """Insert a data key row (IntegrityError if the session has one already)."""
    conn.execute(
        insert(data_keys).values(
            stream_id=row.stream_id,
            key_id=row.key_id,
            format=FORMAT,
            master_key_id=row.master_key_id,
            wrapped=row.wrapped,
            created_at=now,
            shredded_at=row.shredded_at,
        )
    )


def shred_tx(conn: Connection, stream_id: str, now: int) -> bool:
    """Destroy the session's wrapped data key, leaving a tombstone; False if it was gone.

    The wrapped key is first overwritten with random bytes of its own length, so a
    database that updates a row in place (SQLite) keeps no copy of it in the page.
    """
    row = read_data_key_tx(conn, stream_id)
    if row is None:  # never encrypted: the tombstone still refuses it from now on
        tombstone = DataKeyRow(stream_id, os.urandom(8).hex(), None, None, now)
        insert_data_key_tx(conn, tombstone, now)
        return True
    if row.wrapped is None:
        return False
    where = data_keys.c.stream_id == stream_id
    conn.execute(update(data_keys).where(where).values(wrapped=os.urandom(len(row.wrapped))))
    conn.execute(
        update(data_keys).where(where).values(wrapped=None, master_key_id=None, shredded_at=now)
    )
    return True


def rotate_tx(
    conn: Connection,
    current: KekParams,
    old_kek: bytes,
    new_params: KekParams,
    new_kek: bytes,
    now: int,
) -> int:
    """Re-wrap every data key of the table under ``new_kek``; return how many.

    ``current`` is the master key row the caller opened ``old_kek`` from (the KEKs are
    derived before the transaction: scrypt takes a tenth of a second). One transaction:
    afterwards no row is wrapped under the old KEK and its verifier is replaced, so the
    old master key stops working. Items are not touched.
    """
    params = read_master_tx(conn)
    if params != current:
        raise WrongKeyError("the master key was rotated meanwhile; the key given is no longer it")
    t = data_keys
    rows = conn.execute(
        select(t.c.stream_id, t.c.key_id, t.c.master_key_id, t.c.wrapped).where(
            t.c.wrapped.is_not(None)
        )
    ).all()
    rewrapped: list[dict[str, Any]] = []
    for r in rows:
        row = DataKeyRow(r.stream_id, r.key_id, r.master_key_id, bytes(r.wrapped), None)
        if row.master_key_id != params.key_id:
            raise TamperedError(
                f"session {row.stream_id!r}: its data key names a master key "
                f"{row.master_key_id!r} this table does not have"
            )
        data_key = unwrap(old_kek, row)
        rewrapped.append(
            {
                "sid": row.stream_id,
                "new_wrapped": wrap(
                    new_kek, new_params.key_id, row.stream_id, row.key_id, data_key
                ),
            }
        )
    if rewrapped:
        conn.execute(
            update(t)
            .where(t.c.stream_id == bindparam("sid"))
            .values(wrapped=bindparam("new_wrapped"), master_key_id=new_params.key_id),
            rewrapped,
        )
    conn.execute(
        update(master_key)
        .where(master_key.c.name == MASTER_ROW)
        .values(
            key_id=new_params.key_id,
            kdf=new_params.kdf,
            salt=new_params.salt,
            log2_n=new_params.log2_n,
            r=new_params.r,
            p=new_params.p,
            verifier=new_params.verifier,
            created_at=now,
        )
    )
    return len(rewrapped)

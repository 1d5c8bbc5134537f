"""The key tables of encrypted sessions, and the transactions on them.

``convstore_master_key`` holds one row: how the key-encryption key (KEK) is derived
from the master key (KDF, salt, cost), its id, and a verifier that tells a wrong master
key apart from a damaged data key. ``convstore_data_keys`` holds one row per encrypted
session: its data key wrapped under the KEK, or (shredded) a tombstone. Both sit in a
database of the caller's choice: the session's own by default, or a separate key
database. Each ``*_tx`` function runs inside a store transaction it is given.
"""

from __future__ import annotations

import os
from typing import Any

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

from eventstore import TamperedError, WrongKeyError
from eventstore.prepared import Prepared
from eventstore.schema import MYSQL_TABLE_OPTIONS, Blob, StreamId

from .cipher import Cipher
from .keys import FORMAT, DataKeyRow, KekParams, unwrap, wrap

MASTER_ROW = "master"

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


# -- transactions on the key tables ------------------------------------------------------


def _params(row: Any) -> KekParams:
    """The KEK parameters a master key row holds."""
    return KekParams(
        row.key_id, row.kdf, bytes(row.salt), row.log2_n, row.r, row.p, bytes(row.verifier)
    )


def _master_values(params: KekParams, now: int) -> dict[str, Any]:
    """The columns of the master key row that each KEK sets (a rotation replaces them)."""
    return {
        "key_id": params.key_id,
        "kdf": params.kdf,
        "salt": params.salt,
        "log2_n": params.log2_n,
        "r": params.r,
        "p": params.p,
        "verifier": params.verifier,
        "created_at": now,
    }


def read_master_tx(conn: Connection) -> KekParams | None:
    """The KEK parameters of the table's master key row, or None before the first key."""
    row = conn.execute(select(master_key).where(master_key.c.name == MASTER_ROW)).first()
    return None if row is None else _params(row)


def insert_master_tx(conn: Connection, params: KekParams, now: int) -> None:
    """Insert the master key row (IntegrityError if another writer inserted one first)."""
    conn.execute(
        insert(master_key).values(name=MASTER_ROW, format=FORMAT, **_master_values(params, now))
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
    old_kek: Cipher,
    new_params: KekParams,
    new_kek: Cipher,
    now: int,
) -> int:
    """Re-wrap every data key of the table under ``new_kek``; return how many.

    ``current`` is the master key row the caller opened ``old_kek`` from (the KEKs are
    derived before the transaction, which scrypt would hold open). One transaction:
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
        .values(**_master_values(new_params, now))
    )
    return len(rewrapped)

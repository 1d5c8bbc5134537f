"""Helpers of the EncryptedSession tests: keys, a settable clock, raw database access."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from sqlalchemy import Connection, MetaData, select, update

from eventstore import EventStore
from sessions import EncryptedSession, StoreSession
from sessions.base import HISTORY

from .conftest import Sessions

RAW_KEY = bytes(range(32))
KEY = base64.urlsafe_b64encode(RAW_KEY).decode()  # the Fernet.generate_key() form
OTHER_KEY = base64.urlsafe_b64encode(bytes(range(100, 132))).decode()
# The example key of the Sessions guide's EncryptedSession: a passphrase (scrypt).
GUIDE_KEY = "your-32-byte-key-here-for-aes256"
MARKER = "PLAINTEXT-MARKER-7f3a"


class Clock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def encrypted(
    sessions: Sessions, session_id: str = "s", *, key: str | bytes = KEY, **kwargs: Any
) -> EncryptedSession:
    """An EncryptedSession over a new session object on the test's database."""
    return EncryptedSession(session=sessions.open(session_id), encryption_key=key, **kwargs)


def secret(n: int) -> dict[str, Any]:
    return {"role": "user", "content": f"{MARKER} {n} naïve — ünïcødé ✓", "n": n}


async def stored_bytes(store: EventStore) -> bytes:
    """Every value of every convstore table, as bytes (what a database dump holds)."""

    def dump(conn: Connection) -> bytes:
        tables = MetaData()
        tables.reflect(conn, only=lambda name, _: name.startswith("convstore_"))
        out: list[bytes] = []
        for table in tables.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    out.append(
                        bytes(value)
                        if isinstance(value, bytes | memoryview)
                        else str(value).encode()
                    )
        return b"\n".join(out)

    return await store.run(dump)


async def raw_items(base: StoreSession) -> list[dict[str, Any]]:
    """The stored items of the session's branch, as the projection holds them."""
    return await base.get_items()


async def rewrite_newest(base: StoreSession, change: Any) -> None:
    """Replace the stored JSON of the newest item by ``change(envelope dict)``'s."""
    t = HISTORY.items
    sid, bid = base.session_id, base._branch_id

    def rewrite(conn: Connection) -> None:
        top = HISTORY.read_top(conn, sid, bid)
        assert top is not None
        envelope = msgspec.json.decode(top[1])
        new = msgspec.json.encode(change(envelope))
        conn.execute(
            update(t)
            .where(t.c.stream_id == sid, t.c.branch_id == bid, t.c.seq == top[0])
            .values(item=new)
        )

    await base.store.run(rewrite, write=True)


def flip_byte(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope with one bit of its ciphertext flipped."""
    sealed = bytearray(base64.b64decode(envelope["ct"]))
    sealed[len(sealed) // 2] ^= 0x01
    return {**envelope, "ct": base64.b64encode(bytes(sealed)).decode()}

"""EncryptedSession on every backend: TTL and expiry events, rotation, crypto-shredding,
a separate key database, and the SDK's Runner."""

from __future__ import annotations

import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner
from agents.testing import ScriptedModel, assistant_message
from sqlalchemy import inspect

from eventstore import (
    InvalidArgumentError,
    ItemsAdded,
    ItemsExpired,
    KeyShreddedError,
    WrongKeyError,
)
from projections import verify
from sessions import (
    EncryptedSession,
    SQLiteSession,
    purge_expired,
    release_sqlite_files,
    rotate_master_key,
    shred_session,
)
from sessions.admin import audit_database
from sessions.crypto import keyring
from sessions.crypto.keys import DataKeyRow
from sessions.crypto.tables import read_data_key_tx

from ..conftest import Backend
from ..eventstore.chain_check import assert_chain_valid
from .conftest import Sessions
from .encryption import (
    GUIDE_KEY,
    KEY,
    MARKER,
    OTHER_KEY,
    Clock,
    encrypted,
    raw_items,
    secret,
    stored_bytes,
)
from .forking import forking, in_forked_child, needs_fork


async def audit(session: EncryptedSession) -> None:
    """What ``convstore DB audit`` checks passes (chains, versions, projections vs. a
    replay), and the chain recomputed here holds too."""
    assert_chain_valid(await session.store.read_stream(session.session_id))
    report = await audit_database(session.store)
    assert report.ok, [str(f) for f in report.findings]
    verified = await verify(session.store)
    assert verified.ok, str(verified)


async def data_key_row(session: EncryptedSession) -> DataKeyRow | None:
    sid = session.session_id
    return await session.key_store.run(lambda conn: read_data_key_tx(conn, sid))


# -- TTL -------------------------------------------------------------------------------


async def test_expired_items_are_hidden_and_limit_counts_valid_items(sessions: Sessions) -> None:
    clock = Clock()
    session = encrypted(sessions, ttl=100, clock=clock)
    await session.add_items([secret(n) for n in range(5)])
    clock.now += 60
    await session.add_items([secret(n) for n in range(5, 8)])
    clock.now += 50  # the first five are 110 s old
    assert await session.get_items() == [secret(5), secret(6), secret(7)]
    assert await session.get_items(limit=2) == [secret(6), secret(7)]
    assert await session.get_items(limit=3) == [secret(5), secret(6), secret(7)]
    assert await session.get_items(limit=50) == [secret(5), secret(6), secret(7)]
    clock.now += 100
    assert await session.get_items() == []
    assert await session.get_items(limit=2) == []
    assert await session.pop_item() is None
    assert len(await raw_items(session.underlying_session)) == 8  # hidden, not removed


async def test_ttl_none_never_expires(sessions: Sessions) -> None:
    clock = Clock()
    session = encrypted(sessions, ttl=None, clock=clock)
    await session.add_items([secret(1)])
    clock.now += 10 * 365 * 86400
    assert await session.get_items() == [secret(1)]
    assert await session.purge_expired() == 0


async def test_a_clock_going_back_still_gives_the_newest_valid_items(sessions: Sessions) -> None:
    clock = Clock(1000)
    session = encrypted(sessions, ttl=150, clock=clock)
    await session.add_items([secret(1)])  # sealed at 1000
    clock.now = 900
    await session.add_items([secret(2)])  # another host's clock is behind
    clock.now = 1000
    await session.add_items([secret(3)])
    clock.now = 1060  # 2 is expired, 1 and 3 are not
    assert await session.get_items() == [secret(1), secret(3)]
    assert await session.get_items(limit=2) == [secret(1), secret(3)]
    assert await session.pop_item() == secret(3)
    assert await session.pop_item() == secret(1)  # the expired item above it stays hidden
    assert await session.pop_item() is None
    assert len(await raw_items(session.underlying_session)) == 1
    await audit(session)


async def test_purge_expired_records_an_event(sessions: Sessions) -> None:
    clock = Clock()
    session = encrypted(sessions, ttl=100, clock=clock)
    await session.add_items([secret(n) for n in range(3)])
    clock.now += 60
    await session.add_items([secret(n) for n in range(3, 5)])
    clock.now += 50
    assert await session.purge_expired() == 3
    log = await session.store.read_stream("s")
    assert isinstance(log[-1].event, ItemsExpired)
    assert sum(len(e.event.items) for e in log if isinstance(e.event, ItemsAdded)) == 5
    assert len(await raw_items(session.underlying_session)) == 2  # projections agree
    assert await session.get_items() == [secret(3), secret(4)]
    assert await session.purge_expired() == 0  # nothing more: no event
    assert len(await session.store.read_stream("s")) == len(log)
    await audit(session)


async def test_purge_expired_for_scripts_needs_no_key(sessions: Sessions) -> None:
    clock = Clock()
    session = encrypted(sessions, ttl=100, clock=clock)
    await session.add_items([secret(1), secret(2)])
    assert await purge_expired(session.store, "s", ttl=100, now=clock.now + 99) == 0
    assert await purge_expired(session.store, "s", ttl=100, now=clock.now + 100) == 2
    assert await purge_expired(session.store, "nobody", ttl=1) == 0
    assert await raw_items(session.underlying_session) == []


async def test_purge_expired_leaves_plaintext_and_bad_ttls_alone(sessions: Sessions) -> None:
    base = sessions.open("plain")
    await base.add_items([{"role": "user", "content": "not encrypted"}])
    before = await base.store.stream_info("plain")
    assert await purge_expired(base.store, "plain", ttl=0, now=1e12) == 0
    assert await base.store.stream_info("plain") == before  # no event written
    for ttl in (-1, True, "60"):
        with pytest.raises(InvalidArgumentError, match="ttl"):
            await purge_expired(base.store, "plain", ttl=ttl)  # type: ignore[arg-type]


async def test_purge_expired_refuses_a_ttl_that_is_not_a_number(sessions: Sessions) -> None:
    """NaN compares false with everything: it is refused as a bad ttl, not turned into a
    cutoff (which failed with a ValueError of its own)."""
    base = sessions.open("plain")
    with pytest.raises(InvalidArgumentError, match="ttl"):
        await purge_expired(base.store, "plain", ttl=float("nan"))


async def test_purge_expired_by_path_or_url(backend: Backend, sessions: Sessions) -> None:
    if backend.name == "sqlite-memory":
        pytest.skip("a private in-memory database cannot be opened by path")
    clock = Clock()
    session = encrypted(sessions, ttl=100, clock=clock)
    await session.add_items([secret(1)])
    assert await purge_expired(backend.target, "s", ttl=100, now=clock.now + 101) == 1
    assert await raw_items(session.underlying_session) == []


# -- rotation --------------------------------------------------------------------------


async def test_rotation_rewraps_every_data_key_without_touching_items(
    sessions: Sessions,
) -> None:
    a, b = encrypted(sessions, "a"), encrypted(sessions, "b")
    await a.add_items([secret(1)])
    await b.add_items([secret(2)])
    stored = (await raw_items(a.underlying_session), await raw_items(b.underlying_session))
    assert await a.rotate_key(OTHER_KEY) == 2
    assert (await raw_items(a.underlying_session), await raw_items(b.underlying_session)) == stored
    assert await a.get_items() == [secret(1)]  # this object now uses the new key
    with pytest.raises(WrongKeyError):
        await b.get_items()  # b's object still holds the old key
    with pytest.raises(WrongKeyError):
        await encrypted(sessions, "b", key=KEY).get_items()
    with pytest.raises(WrongKeyError):
        await encrypted(sessions, "c", key=KEY).add_items([secret(3)])
    assert await encrypted(sessions, "b", key=OTHER_KEY).get_items() == [secret(2)]
    await encrypted(sessions, "c", key=OTHER_KEY).add_items([secret(3)])
    await audit(a)


async def test_rotation_to_a_passphrase_and_back_by_script(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    assert await session.rotate_key(GUIDE_KEY) == 1
    assert await encrypted(sessions, key=GUIDE_KEY).get_items() == [secret(1)]
    with pytest.raises(WrongKeyError):  # the old key cannot rotate any more
        await rotate_master_key(session.store, KEY, OTHER_KEY)
    assert await rotate_master_key(session.store, GUIDE_KEY, KEY) == 1
    assert await encrypted(sessions, key=KEY).get_items() == [secret(1)]


async def test_a_rotation_between_reading_the_key_row_and_the_master_key(
    sessions: Sessions,
) -> None:
    """A reader that read the data key row just before a rotation committed, and the
    master key row just after, reads the row again instead of failing."""
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    stale = await data_key_row(session)
    assert stale is not None
    assert await rotate_master_key(session.store, KEY, OTHER_KEY) == 1
    reader = encrypted(sessions, key=OTHER_KEY)
    cipher = await reader._cipher_of(stale)
    assert cipher.key_id == stale.key_id
    assert await reader.get_items() == [secret(1)]


async def test_rotation_with_a_wrong_key_changes_nothing(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    wrong = encrypted(sessions, key=OTHER_KEY)
    with pytest.raises(WrongKeyError):
        await wrong.rotate_key(GUIDE_KEY)
    assert await encrypted(sessions, key=KEY).get_items() == [secret(1)]


# -- crypto-shredding ------------------------------------------------------------------


async def test_shredded_items_cannot_be_read_even_with_the_master_key(
    sessions: Sessions,
) -> None:
    a, b = encrypted(sessions, "a"), encrypted(sessions, "b")
    await a.add_items([secret(1), secret(2)])
    await b.add_items([secret(3)])
    assert await a.shred() is True
    for read in (a.get_items(), a.get_items(limit=1), a.pop_item(), a.add_items([secret(4)])):
        with pytest.raises(KeyShreddedError):
            await read
    with pytest.raises(KeyShreddedError):
        await encrypted(sessions, "a", key=KEY).get_items()
    assert len(await raw_items(a.underlying_session)) == 2  # pop removed nothing
    row = await data_key_row(a)
    assert row is not None
    assert row.wrapped is None
    assert row.shredded_at is not None
    assert await b.get_items() == [secret(3)]  # other sessions are untouched
    assert await a.shred() is False
    await audit(a)  # the chain covers the ciphertext, which is still there


async def test_shred_session_for_scripts(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    assert await shred_session(session.store, "s") is True
    with pytest.raises(KeyShreddedError):
        await session.get_items()  # the object's cached key is no use: the row is checked
    assert await shred_session(session.store, "never-encrypted") is True
    with pytest.raises(KeyShreddedError):  # a tombstone: the id cannot be encrypted later
        await encrypted(sessions, "never-encrypted").add_items([secret(2)])


async def test_shred_by_path_or_url(backend: Backend, sessions: Sessions) -> None:
    if backend.name == "sqlite-memory":
        pytest.skip("a private in-memory database cannot be opened by path")
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    assert await shred_session(backend.target, "s") is True
    with pytest.raises(KeyShreddedError):
        await session.get_items()


async def test_a_session_object_per_request_reuses_the_opened_key(
    backend: Backend, sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process keeps the data keys it opened: a new object neither reads the master
    key row nor unwraps again. A rotation or shred made elsewhere (here: with this
    process's cache not told of it, as another process would) is still seen by the next
    read and the next write, each of which reads the key row afresh."""
    if backend.name == "sqlite-memory":
        pytest.skip("another process reaches the database by its path or URL")
    monkeypatch.setattr(keyring._opened, "drop", lambda session_id=None: None)
    await encrypted(sessions).add_items([secret(1)])
    opened: Counter[str] = Counter()

    def counted(name: str, fn: Any) -> Any:
        def call(*args: Any) -> Any:
            opened[name] += 1
            return fn(*args)

        return call

    monkeypatch.setattr(keyring, "unwrap", counted("unwrap", keyring.unwrap))
    monkeypatch.setattr(keyring, "read_master_tx", counted("master", keyring.read_master_tx))
    for n in range(2, 5):
        again = encrypted(sessions)  # a new object per request
        assert (await again.get_items())[-1] == secret(n - 1)
        await again.add_items([secret(n)])
    assert opened == Counter(), "a new object opened the key again"
    assert await rotate_master_key(backend.target, KEY, OTHER_KEY) == 1
    with pytest.raises(WrongKeyError):  # the old master key opens nothing any more
        await encrypted(sessions).add_items([secret(9)])
    with pytest.raises(WrongKeyError):
        await encrypted(sessions).get_items()
    newer = encrypted(sessions, key=OTHER_KEY)
    assert await newer.get_items() == [secret(n) for n in range(1, 5)]
    assert await shred_session(backend.target, "s") is True
    with pytest.raises(KeyShreddedError):
        await newer.add_items([secret(10)])
    with pytest.raises(KeyShreddedError):
        await encrypted(sessions, key=OTHER_KEY).get_items()
    assert len(await raw_items(newer.underlying_session)) == 4


@needs_fork
@forking
async def test_a_forked_child_uses_the_opened_keys(tmp_path: Path) -> None:
    """The process's opened keys survive os.fork() even if a thread of the parent held
    their lock at that moment; the child reads and writes with them, and so does the
    parent afterwards."""
    path = tmp_path / "c.db"
    async with EncryptedSession(session=SQLiteSession("s", path), encryption_key=KEY) as first:
        await first.add_items([secret(1)])

    async def check() -> None:
        child = EncryptedSession(session=SQLiteSession("s", path), encryption_key=KEY)
        assert await child.get_items() == [secret(1)]
        await child.add_items([secret(2)])
        await child.close()
        release_sqlite_files()

    with keyring._opened._lock:  # (held at the fork: the child makes its own)
        in_forked_child(check)
    async with EncryptedSession(session=SQLiteSession("s", path), encryption_key=KEY) as again:
        assert await again.get_items() == [secret(1), secret(2)]
        await again.add_items([secret(3)])
    release_sqlite_files(path)


def checkpointed_bytes(path: Path) -> bytes:
    """The main database file after its WAL is checkpointed into it and truncated."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.read_bytes()


async def test_a_shredded_key_is_gone_from_the_sqlite_file(backend: Backend) -> None:
    if backend.name != "sqlite-file":
        pytest.skip("the raw file of a SQLite database")
    session = EncryptedSession(session=SQLiteSession("s", backend.target), encryption_key=KEY)
    await session.add_items([secret(n) for n in range(20)])
    row = await data_key_row(session)
    assert row is not None
    assert row.wrapped is not None
    await session.shred()
    await session.close()
    data = checkpointed_bytes(Path(backend.target))
    assert data.count(b"__convstore_encrypted__") >= 20
    assert row.wrapped not in data


async def test_a_restored_backup_brings_a_key_back_unless_keys_live_apart(
    backend: Backend, tmp_path: Path
) -> None:
    """What the docs say about backups: with the keys beside the log, a copy of the
    database made before shredding still holds the key; with a separate key database,
    shredding does not touch the main database, so no copy of it holds the key."""
    if backend.name != "sqlite-file":
        pytest.skip("copies the SQLite file")
    main = Path(backend.target)
    backup = tmp_path / "backup.db"
    session = EncryptedSession(session=SQLiteSession("s", main), encryption_key=KEY)
    await session.add_items([secret(1)])
    await session.close()
    checkpointed_bytes(main)
    shutil.copy(main, backup)
    await shred_session(str(main), "s")
    async with EncryptedSession(session=SQLiteSession("s", backup), encryption_key=KEY) as old:
        assert await old.get_items() == [secret(1)]  # the key beside the log came back

    keys = str(tmp_path / "keys.db")
    apart = EncryptedSession(session=SQLiteSession("t", main), encryption_key=KEY, key_store=keys)
    await apart.add_items([secret(2)])
    await apart.close()
    checkpointed_bytes(main)
    release_sqlite_files(backup)  # before copying over a database file, as the docs say
    shutil.copy(main, backup)
    await shred_session(str(main), "t", key_store=keys)
    async with EncryptedSession(
        session=SQLiteSession("t", backup), encryption_key=KEY, key_store=keys
    ) as old:
        with pytest.raises(KeyShreddedError):
            await old.get_items()


# -- a separate key database -----------------------------------------------------------


async def test_keys_in_a_separate_database(sessions: Sessions, tmp_path: Path) -> None:
    keys = str(tmp_path / "keys.db")
    session = encrypted(sessions, key_store=keys)
    await session.add_items([secret(1), secret(2)])
    assert await session.get_items() == [secret(1), secret(2)]
    assert await session.pop_item() == secret(2)
    tables = await session.store.run(lambda conn: inspect(conn).get_table_names())
    assert "convstore_data_keys" not in tables  # nothing of the keys in the main database
    before = await stored_bytes(session.store)
    await session.shred()
    assert await stored_bytes(session.store) == before  # shredding left it as it was
    with pytest.raises(KeyShreddedError):
        await session.get_items()
    other = encrypted(sessions, "other", key_store=keys)
    await other.add_items([secret(3)])
    assert await other.rotate_key(OTHER_KEY) == 1  # the shredded key is not re-wrapped
    assert await encrypted(sessions, "other", key=OTHER_KEY, key_store=keys).get_items() == [
        secret(3)
    ]
    for opened in (session, other):
        await opened.close()


# -- the SDK's Runner ------------------------------------------------------------------


def said(items: list[Any]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        content = item["content"]
        text = content if isinstance(content, str) else "".join(c["text"] for c in content)
        out.append((item["role"], text))
    return out


async def test_runner_turns_see_the_decrypted_history(sessions: Sessions) -> None:
    model = ScriptedModel(
        [[assistant_message(text, item_id=f"reply-{n}")] for n, text in enumerate(["1", "2"])]
    )
    agent = Agent(name="Notes", instructions="Help with notes.", model=model)
    session = encrypted(sessions, key=GUIDE_KEY, ttl=3600)
    await Runner.run(agent, f"note {MARKER}", session=session)
    result = await Runner.run(agent, "again", session=session)
    assert result.final_output == "2"
    assert said(model.calls[1].input) == [
        ("user", f"note {MARKER}"),
        ("assistant", "1"),
        ("user", "again"),
    ]
    assert len(await session.get_items()) == 4
    stored = await raw_items(session.underlying_session)
    assert all("__convstore_encrypted__" in item for item in stored)
    assert MARKER.encode() not in await stored_bytes(session.store)


async def test_the_guides_form_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Sessions guide's "Encrypted Session" snippet, as written (plus a run and a read)."""
    monkeypatch.chdir(tmp_path)
    from agents.sessions import EncryptedSession, SQLiteSession

    base_session = SQLiteSession("user_123", "conversations.db")
    session = EncryptedSession(
        session=base_session,
        encryption_key="your-32-byte-key-here-for-aes256",
        ttl=3600,  # Expire after 1 hour
    )

    model = ScriptedModel([[assistant_message("noted")]])
    agent = Agent(name="NotesAgent", instructions="Help with notes.", model=model)
    result = await Runner.run(agent, f"Create a note {MARKER}", session=session)
    assert result.final_output == "noted"
    assert len(await session.get_items()) == 2
    await session.close()
    assert MARKER.encode() not in checkpointed_bytes(tmp_path / "conversations.db")

"""EncryptedSession on every backend: the protocol, no plaintext at rest, loud failures."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from eventstore import (
    ConfigurationError,
    ConvstoreError,
    DecryptionError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyNotFoundError,
    NotEncryptedError,
    SerializationError,
    StoreClosedError,
    TamperedError,
    WrongKeyError,
)
from sessions import EncryptedSession, SQLiteSession, release_sqlite_files
from sessions.crypto.keys import parse_master_key
from sessions.crypto.tables import data_keys

from ..conftest import Backend
from .conftest import Sessions
from .encryption import (
    GUIDE_KEY,
    KEY,
    MARKER,
    OTHER_KEY,
    RAW_KEY,
    encrypted,
    flip_byte,
    raw_items,
    rewrite_newest,
    secret,
    stored_bytes,
)

# -- the protocol ----------------------------------------------------------------------


async def test_items_round_trip_exactly(sessions: Sessions) -> None:
    session = encrypted(sessions)
    items = [secret(1), {"b": 1, "a": [1.5, None, True, "x" * 1000]}, secret(3)]
    await session.add_items(items)
    got = await session.get_items()
    assert json.dumps(got, ensure_ascii=False) == json.dumps(items, ensure_ascii=False)
    assert await session.get_items(limit=2) == items[1:]
    assert await session.pop_item() == items[2]
    assert await session.get_items() == items[:2]
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None


async def test_the_wrapped_session_holds_only_envelopes(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1), {"role": "assistant", "content": MARKER}, 7])
    user, assistant, number = await raw_items(session.underlying_session)
    fields = {"__convstore_encrypted__", "kid", "ts", "iv", "ct"}
    assert set(user) == {*fields, "role"}
    assert user["role"] == "user"  # the one readable mark: where turns start
    assert set(assistant) == set(number) == fields
    assert MARKER not in json.dumps([user, assistant, number])


async def test_both_call_forms(sessions: Sessions) -> None:
    first = EncryptedSession(session=sessions.open("s"), encryption_key=KEY, ttl=3600)
    await first.add_items([secret(1)])
    sdk_form = EncryptedSession(
        session_id="s", underlying_session=sessions.open("s"), encryption_key=KEY, ttl=3600
    )
    assert sdk_form.session_id == "s"
    assert await sdk_form.get_items() == [secret(1)]


async def test_the_guides_passphrase_works(sessions: Sessions) -> None:
    session = encrypted(sessions, key=GUIDE_KEY, ttl=3600)
    await session.add_items([secret(1)])
    again = encrypted(sessions, key=GUIDE_KEY, ttl=3600)
    assert await again.get_items() == [secret(1)]


async def test_a_key_as_bytes_or_as_base64_is_the_same_key(sessions: Sessions) -> None:
    await encrypted(sessions, key=RAW_KEY).add_items([secret(1)])
    assert await encrypted(sessions, key=KEY).get_items() == [secret(1)]
    assert await encrypted(sessions, key=KEY.rstrip("=")).get_items() == [secret(1)]


async def test_non_json_items_are_refused_before_anything_is_written(sessions: Sessions) -> None:
    session = encrypted(sessions)
    with pytest.raises(SerializationError):
        await session.add_items([secret(1), {"bad": b"bytes"}])
    assert await session.get_items() == []
    assert await session.store.stream_info("s") is None


async def test_session_settings_limit_applies(sessions: Sessions) -> None:
    session = EncryptedSession(
        session=sessions.open("s", session_settings={"limit": 2}), encryption_key=KEY
    )
    await session.add_items([secret(n) for n in range(5)])
    assert await session.get_items() == [secret(3), secret(4)]
    assert await session.get_items(limit=1) == [secret(4)]


async def test_closing_closes_the_wrapped_session(sessions: Sessions) -> None:
    async with encrypted(sessions) as session:
        await session.add_items([secret(1)])
    assert session.closed
    assert session.underlying_session.closed
    with pytest.raises(StoreClosedError):
        await session.get_items()
    await session.close()  # idempotent


async def test_a_plain_close_closes_too(sessions: Sessions, tmp_path: Path) -> None:
    session = encrypted(sessions, key_store=str(tmp_path / "keys.db"))
    await session.add_items([secret(1)])
    key_store = session.key_store
    session.close()  # as with the SDK's EncryptedSession over its synchronous session
    assert session.closed
    with pytest.raises(StoreClosedError):
        await session.get_items()
    await session.close()  # awaiting after a plain call waits for the same closing
    assert session.underlying_session.closed
    assert key_store.closed  # the key store it opened is released too


def test_a_plain_close_outside_a_loop(tmp_path: Path) -> None:
    session = EncryptedSession(
        session=SQLiteSession("s", str(tmp_path / "c.db")), encryption_key=KEY
    )
    asyncio.run(session.add_items([secret(1)]))
    session.close()  # no loop runs here: the closing finishes before it returns
    assert release_sqlite_files() == 1  # the file's store, which the session let go of
    assert session.underlying_session.store.closed


# -- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("short-pass", "too short"),
        (b"\x00" * 16, "exactly 32 bytes"),
        (12345, "must be a str"),
    ],
)
async def test_bad_keys_are_refused(key: Any, message: str) -> None:
    with pytest.raises(InvalidKeyError, match=message) as caught:
        parse_master_key(key)
    assert isinstance(caught.value, ValueError)
    async with SQLiteSession("s") as base:
        with pytest.raises(InvalidKeyError):
            EncryptedSession(session=base, encryption_key=key)


def test_key_kinds() -> None:
    assert parse_master_key(RAW_KEY).kind == "raw"
    assert parse_master_key(KEY).kind == "raw"
    assert parse_master_key(KEY).material == RAW_KEY
    assert parse_master_key(GUIDE_KEY).kind == "passphrase"  # 24 bytes in base64: a passphrase
    assert "material" not in repr(parse_master_key(KEY)).replace("kind", "")
    assert KEY not in repr(parse_master_key(KEY))


async def test_bad_arguments_are_refused(sessions: Sessions) -> None:
    base = sessions.open("s")
    with pytest.raises(ConfigurationError, match="exactly one"):
        EncryptedSession(encryption_key=KEY)
    with pytest.raises(ConfigurationError, match="exactly one"):
        EncryptedSession(session=base, underlying_session=base, encryption_key=KEY)
    with pytest.raises(ConfigurationError, match="differs"):
        EncryptedSession(session_id="other", underlying_session=base, encryption_key=KEY)
    with pytest.raises(ConfigurationError, match="wraps one of convstore's sessions") as foreign:
        EncryptedSession(session=object(), encryption_key=KEY)  # type: ignore[arg-type]
    assert str(foreign.value).endswith("SQLAlchemySession, ...), not object")
    with pytest.raises(ConfigurationError, match="required"):
        EncryptedSession(session=base)
    for ttl in (0, -1, True, "60"):
        with pytest.raises(InvalidArgumentError, match="ttl"):
            EncryptedSession(session=base, encryption_key=KEY, ttl=ttl)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limit=") as refused:
        EncryptedSession("s", base, KEY, 600, 100)
    assert isinstance(refused.value, ConvstoreError)  # as every error of convstore


async def test_wrapping_the_sdks_own_session_names_the_import_to_switch(tmp_path: Path) -> None:
    from agents.extensions.memory import SQLAlchemySession as SDKSQLAlchemySession
    from agents.memory import SQLiteSession as SDKSQLiteSession

    sdk_sqlite = SDKSQLiteSession("s", str(tmp_path / "sdk.db"))
    sdk_sqlalchemy = SDKSQLAlchemySession.from_url("s", url="sqlite+aiosqlite://")
    for sdk_session, module, name in [
        (sdk_sqlite, "agents.memory", "SQLiteSession"),
        (sdk_sqlalchemy, "agents.extensions.memory", "SQLAlchemySession"),
    ]:
        with pytest.raises(ConfigurationError) as refused:
            EncryptedSession(session_id="s", underlying_session=sdk_session, encryption_key=KEY)  # type: ignore[arg-type]
        message = str(refused.value)
        assert f"this is the Agents SDK's {name} ({module})" in message
        assert f"`from sessions import {name}` (in place of `from {module} import {name}`)" in (
            message
        )
        assert "convstore DB import-sdk" in message
        assert f"not {name}" not in message  # never "a convstore session ..., not SQLiteSession"
    sdk_sqlite.close()
    await sdk_sqlalchemy.engine.dispose()


# -- no plaintext at rest ---------------------------------------------------------------


async def test_no_plaintext_in_any_table(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(n) for n in range(20)])
    await session.pop_item()
    dump = await stored_bytes(session.store)
    assert b"convstore_data_keys" not in dump  # (the dump is of values, not of names)
    assert b'"__convstore_encrypted__"' in dump  # it did read the items
    assert MARKER.encode() not in dump
    assert "naïve".encode() not in dump
    for event in await session.store.read_all():
        assert MARKER.encode() not in event.payload


async def test_no_plaintext_in_the_sqlite_file(backend: Backend, tmp_path: Path) -> None:
    if backend.name != "sqlite-file":
        pytest.skip("the raw file of a SQLite database")
    base = SQLiteSession("s", backend.target)
    session = EncryptedSession(session=base, encryption_key=KEY)
    await session.add_items([secret(n) for n in range(50)])
    assert len(await session.get_items()) == 50
    before_close = file_bytes(backend.target, "", "-wal")
    await session.close()
    after_close = file_bytes(backend.target, "", "-wal")
    for data in (before_close, after_close):
        assert data.count(b"__convstore_encrypted__") >= 50  # the envelopes are there
        assert MARKER.encode() not in data
        assert "ünïcødé".encode() not in data


def file_bytes(path: str, *suffixes: str) -> bytes:
    """The bytes of a SQLite database's files (main, WAL) that exist."""
    files = [Path(path + suffix) for suffix in suffixes]
    return b"".join(f.read_bytes() for f in files if f.exists())


# -- failures are loud and destroy nothing ---------------------------------------------


async def test_a_wrong_key_raises_and_pops_nothing(sessions: Sessions) -> None:
    await encrypted(sessions).add_items([secret(1), secret(2)])
    wrong = encrypted(sessions, key=OTHER_KEY)
    with pytest.raises(WrongKeyError):
        await wrong.get_items()
    with pytest.raises(WrongKeyError):
        await wrong.get_items(limit=1)
    with pytest.raises(WrongKeyError):
        await wrong.pop_item()
    with pytest.raises(WrongKeyError):
        await wrong.add_items([secret(3)])
    assert await encrypted(sessions).get_items() == [secret(1), secret(2)]
    assert len(await raw_items(wrong.underlying_session)) == 2


async def test_a_wrong_passphrase_is_told_apart_from_damage(sessions: Sessions) -> None:
    await encrypted(sessions, key=GUIDE_KEY).add_items([secret(1)])
    with pytest.raises(WrongKeyError) as caught:
        await encrypted(sessions, key="not-the-passphrase-at-all").get_items()
    assert isinstance(caught.value, DecryptionError)


async def test_a_flipped_byte_is_detected_and_pop_removes_nothing(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1), secret(2)])
    await rewrite_newest(session.underlying_session, flip_byte)
    with pytest.raises(TamperedError) as caught:
        await session.get_items()
    assert MARKER not in str(caught.value)
    with pytest.raises(TamperedError):
        await session.get_items(limit=1)
    with pytest.raises(TamperedError):
        await session.pop_item()
    assert len(await raw_items(session.underlying_session)) == 2


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda e: {**e, "ts": e["ts"] + 1}, id="timestamp"),
        pytest.param(lambda e: {**e, "iv": base64.b64encode(b"\x00" * 12).decode()}, id="nonce"),
        pytest.param(lambda e: {**e, "ct": e["ct"][:-4]}, id="truncated"),
        pytest.param(lambda e: {**e, "ct": "not base64!"}, id="not-base64"),
        pytest.param(lambda e: {**e, "extra": 1}, id="extra-field"),
        pytest.param(lambda e: {k: v for k, v in e.items() if k != "ct"}, id="missing-field"),
        pytest.param(lambda e: {**e, "__convstore_encrypted__": 2}, id="unknown-format"),
        pytest.param(lambda e: {k: v for k, v in e.items() if k != "role"}, id="role-removed"),
        pytest.param(lambda e: {**e, "role": "assistant"}, id="role-changed"),
    ],
)
async def test_every_change_to_an_envelope_is_detected(sessions: Sessions, change: Any) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    await rewrite_newest(session.underlying_session, change)
    with pytest.raises(TamperedError):
        await session.get_items()
    with pytest.raises(TamperedError):
        await session.pop_item()
    assert len(await raw_items(session.underlying_session)) == 1


async def test_a_turn_mark_added_to_another_item_is_detected(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([{"role": "assistant", "content": MARKER}])
    await rewrite_newest(session.underlying_session, lambda e: {**e, "role": "user"})
    with pytest.raises(TamperedError):
        await session.get_items()


async def test_an_envelope_copied_to_another_session_does_not_open(sessions: Sessions) -> None:
    a, b = encrypted(sessions, "a"), encrypted(sessions, "b")
    await a.add_items([secret(1)])
    await b.add_items([secret(2)])
    (stolen,) = await raw_items(a.underlying_session)
    await b.underlying_session.add_items([stolen])
    with pytest.raises(KeyNotFoundError):  # sealed with a's data key, not b's
        await b.get_items()
    await b.underlying_session.pop_item()
    (own,) = await raw_items(b.underlying_session)
    await b.underlying_session.add_items([{**stolen, "kid": own["kid"]}])
    with pytest.raises(TamperedError):  # the session id is bound: b's key does not open it
        await b.get_items()


async def test_a_replayed_envelope_is_detected(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    (stored,) = await raw_items(session.underlying_session)
    await session.underlying_session.add_items([stored])
    with pytest.raises(TamperedError, match="twice"):
        await session.get_items()


async def test_a_missing_data_key_raises(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    await session.store.run(lambda conn: conn.execute(delete(data_keys)), write=True)
    fresh = encrypted(sessions)
    with pytest.raises(KeyNotFoundError):
        await fresh.get_items()
    with pytest.raises(KeyNotFoundError):
        await fresh.pop_item()
    assert len(await raw_items(fresh.underlying_session)) == 1


async def test_plaintext_history_is_refused(sessions: Sessions) -> None:
    base = sessions.open("s")
    await base.add_items([{"role": "user", "content": "written before encryption"}])
    session = EncryptedSession(session=base, encryption_key=KEY)
    with pytest.raises(NotEncryptedError, match="new session id"):
        await session.add_items([secret(1)])
    with pytest.raises(NotEncryptedError):
        await session.get_items()
    with pytest.raises(NotEncryptedError):
        await session.pop_item()
    assert await base.get_items() == [{"role": "user", "content": "written before encryption"}]
    await base.clear_session()  # the log still holds the plaintext: still refused
    with pytest.raises(NotEncryptedError):
        await session.add_items([secret(1)])


async def test_plaintext_slipped_in_underneath_is_reported(sessions: Sessions) -> None:
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    await session.underlying_session.add_items([{"role": "user", "content": "bypass"}])
    with pytest.raises(NotEncryptedError):
        await session.get_items()
    with pytest.raises(NotEncryptedError):
        await session.pop_item()


async def test_concurrent_first_writers_share_one_data_key(sessions: Sessions) -> None:
    writers = [encrypted(sessions) for _ in range(4)]
    await asyncio.gather(*(w.add_items([secret(n)]) for n, w in enumerate(writers)))
    stored = await raw_items(writers[0].underlying_session)
    assert len({item["kid"] for item in stored}) == 1
    assert sorted(i["n"] for i in await encrypted(sessions).get_items()) == [0, 1, 2, 3]


async def test_a_wrapped_key_copied_to_another_session_does_not_open(sessions: Sessions) -> None:
    a, b = encrypted(sessions, "a"), encrypted(sessions, "b")
    await a.add_items([secret(1)])
    await b.add_items([secret(2)])
    t = data_keys
    row_a = await a.store.run(
        lambda conn: conn.execute(
            select(t.c.key_id, t.c.master_key_id, t.c.wrapped).where(t.c.stream_id == "a")
        ).one()
    )
    await a.store.run(
        lambda conn: conn.execute(
            update(t)
            .where(t.c.stream_id == "b")
            .values(key_id=row_a.key_id, master_key_id=row_a.master_key_id, wrapped=row_a.wrapped)
        ),
        write=True,
    )
    with pytest.raises(TamperedError, match="wrapped data key"):
        await encrypted(sessions, "b").get_items()
    assert await encrypted(sessions, "a").get_items() == [secret(1)]


@pytest.mark.parametrize("length", [0, 3, 11, 20])
async def test_a_truncated_wrapped_key_is_tampering(sessions: Sessions, length: int) -> None:
    """A wrapped key too short to hold a nonce and a tag is reported as tampering, as any
    other damage is, not as a ValueError of the cipher underneath."""
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    t = data_keys
    await session.store.run(
        lambda conn: conn.execute(
            update(t).where(t.c.stream_id == session.session_id).values(wrapped=b"\x01" * length)
        ),
        write=True,
    )
    with pytest.raises(TamperedError, match="wrapped data key"):
        await encrypted(sessions).get_items()


async def test_a_replayed_envelope_with_bytes_moved_into_its_nonce_is_detected(
    sessions: Sessions,
) -> None:
    """A copy whose first ciphertext byte is moved to the end of its nonce seals the same
    bytes under another ``iv``: it must not pass as a second, distinct item."""
    session = encrypted(sessions)
    await session.add_items([secret(1)])
    (stored,) = await raw_items(session.underlying_session)
    iv, ct = base64.b64decode(stored["iv"]), base64.b64decode(stored["ct"])
    moved = {
        **stored,
        "iv": base64.b64encode(iv + ct[:1]).decode(),
        "ct": base64.b64encode(ct[1:]).decode(),
    }
    await session.underlying_session.add_items([moved])
    with pytest.raises(TamperedError):
        await session.get_items()

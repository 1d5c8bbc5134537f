"""Every write of a session's events on PostgreSQL takes the session's advisory lock
before its transaction has an id (docs/design.md, guarantee 4).

A transaction id taken before the lock would be taken while other writers of the
session may still be running, and a later version could get a lower position. Each
write path of the code base runs here with the lock wrapped: right before the lock is
taken, the transaction must have no id (``pg_current_xact_id_if_assigned()`` is
NULL), and every session written must have been locked by the transaction that wrote
it, and every transaction that takes positions must have taken the lock first. Plain
and coalesced appends, pops, clears, branch calls, usage, encrypted sessions, an import,
a repair and a deletion.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from agents.usage import Usage
from sqlalchemy import Connection, text

from eventstore import EventStore, ItemsAdded, encode_items, repair_positions
from eventstore.backends.postgres import PostgresDialect, stream_lock_key
from sessions import AdvancedSQLAlchemySession, EncryptedSession, StoreSession
from sessions.admin import delete_session
from sessions.base import HISTORY
from sessions.transfer import export_events, import_events

from .conftest import Backend
from .test_repair import swap_positions

_taken = PostgresDialect.lock_streams


_positions = PostgresDialect.advance_head
# A transaction, whether or not it has an id yet: its backend and its start time.
_TRANSACTION = text("SELECT pg_backend_pid(), transaction_timestamp()")


class Recorder:
    """What each call of ``lock_streams`` found (the sessions, and whether the
    transaction had an id already), and which transactions took positions without
    having taken a lock first."""

    def __init__(self) -> None:
        self.calls: list[tuple[frozenset[str], object]] = []
        self.locking: set[tuple[Any, ...]] = set()
        self.unlocked: list[tuple[Any, ...]] = []

    def lock_streams(self, dialect: PostgresDialect, conn: Connection, ids: Iterable[str]) -> None:
        ids = frozenset(ids)
        xid = conn.execute(text("SELECT pg_current_xact_id_if_assigned()")).scalar()
        self.calls.append((ids, xid))
        self.locking.add(tuple(conn.execute(_TRANSACTION).one()))
        _taken(dialect, conn, ids)

    def advance_head(
        self, dialect: PostgresDialect, conn: Connection, *args: Any, **kwargs: Any
    ) -> Any:
        transaction = tuple(conn.execute(_TRANSACTION).one())
        if transaction not in self.locking:
            self.unlocked.append(transaction)
        return _positions(dialect, conn, *args, **kwargs)

    def locked(self) -> set[str]:
        return {sid for ids, _ in self.calls for sid in ids}


async def exported(path: Path, names: Iterable[str]) -> bytes:
    """An export of one-event sessions ``names``, written in a SQLite file at ``path``."""
    async with EventStore(path, projectors=[HISTORY]) as source:
        for n, name in enumerate(names):
            await source.append(name, [ItemsAdded(items=encode_items([n]))])
        out = io.BytesIO()
        await export_events(source, out)
    return out.getvalue()


@pytest.fixture
def recorder(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    if backend.name != "postgres":
        pytest.skip("positions come from transaction ids on PostgreSQL only")
    recorder = Recorder()
    monkeypatch.setattr(
        PostgresDialect,
        "lock_streams",
        lambda dialect, conn, ids: recorder.lock_streams(dialect, conn, ids),
    )
    monkeypatch.setattr(
        PostgresDialect,
        "advance_head",
        lambda dialect, conn, *args, **kwargs: recorder.advance_head(
            dialect, conn, *args, **kwargs
        ),
    )
    return recorder


async def test_every_write_path_locks_before_it_has_a_transaction_id(
    backend: Backend, recorder: Recorder, tmp_path: Path
) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("plain", [ItemsAdded(items=encode_items([1]))])
    await store.append("plain", [ItemsAdded(items=encode_items([2]))], expected_version=1)
    # Coalesced: one store, several appends to one stream at once.
    await asyncio.gather(
        *(store.append("grouped", [ItemsAdded(items=encode_items([n]))]) for n in range(8))
    )
    session = StoreSession("session", store)
    await session.add_items([{"role": "user", "content": "a"}])
    await session.pop_item()
    await session.clear_session()
    advanced = AdvancedSQLAlchemySession("advanced", engine=store.engine, create_tables=True)
    await advanced.add_items(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]
    )
    await advanced.create_branch_from_turn(1, "b")
    await advanced.switch_to_branch("main")
    await advanced.delete_branch("b")
    usage = Usage(requests=1, input_tokens=3, output_tokens=4, total_tokens=7)
    await advanced.store_run_usage(SimpleNamespace(context_wrapper=SimpleNamespace(usage=usage)))
    await advanced.pop_item()
    await advanced.close()
    secret = EncryptedSession(
        session=StoreSession("secret", store), encryption_key=b"k" * 32, ttl=None
    )
    await secret.add_items([{"role": "user", "content": "hidden"}])
    await secret.pop_item()
    await import_events(store, io.BytesIO(await exported(tmp_path / "source.db", ["copy"])))
    grouped = await store.read_stream("grouped")
    await swap_positions(store, grouped[0].position, grouped[1].position)  # for repair
    assert all(xid is None for _, xid in recorder.calls), recorder.calls
    assert recorder.unlocked == []  # every transaction that took positions locked first
    assert len(recorder.locking) > 10
    recorder.calls.clear()
    assert [s.stream_id for s in (await repair_positions(store)).streams] == ["grouped"]
    await delete_session(store, "plain")  # deletes: its writers wait, holding nothing
    assert recorder.locked() == {"grouped", "plain"}
    written = {info.stream_id for info in await store.list_streams()}
    assert written == {"grouped", "session", "advanced", "secret", "copy"}
    assert all(xid is None for _, xid in recorder.calls), recorder.calls


async def test_the_import_locks_every_session_of_its_batch(
    backend: Backend, recorder: Recorder, tmp_path: Path
) -> None:
    names = [f"s{n}" for n in range(5)]
    data = await exported(tmp_path / "source.db", names)
    await import_events(backend.store(projectors=(HISTORY,)), io.BytesIO(data))
    assert recorder.calls == [(frozenset(names), None)]
    assert recorder.unlocked == []


def test_a_sessions_lock_key_is_the_same_in_every_process_and_release() -> None:
    """Processes of two releases writing one database must take the same lock."""
    assert stream_lock_key("alice") == stream_lock_key("alice")
    keys = {stream_lock_key(f"user-{n}") for n in range(10_000)}
    assert len(keys) == 10_000
    assert all(-(2**63) <= k < 2**63 for k in keys)
    # BLAKE2b-64 of the UTF-8 id, personalised "convstore": a change here is a change of
    # lock, which two releases running side by side would not share.
    assert stream_lock_key("alice") == -5280363007567103095
    assert stream_lock_key("user_123") == 7234468738771086714

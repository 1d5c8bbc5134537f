"""Audit catches tampering done with raw SQL, on every backend.

Each test writes a small log through the sessions API, changes the stored rows with
plain SQL statements (as someone with write access to the database would), and checks
that the audit reports it, naming the session and the version.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from eventstore import AuditReport, EventStore, decode_event
from eventstore.checkpoints import load_checkpoints
from sessions import StoreSession
from sessions.admin import (
    AuditFailedError,
    audit_database,
    delete_session,
    replay,
    retention,
    take_checkpoints,
)
from sessions.base import HISTORY

from .conftest import Backend
from .eventstore.chain_check import GENESIS_HEX, reference_hash


async def sql(store: EventStore, statement: str, **params: Any) -> list[Any]:
    """Run one raw SQL statement in its own transaction; rows if it returns any."""

    def run(conn: Any) -> list[Any]:
        result = conn.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []

    return await store.run(run, write=True)


@pytest.fixture
async def store(backend: Backend) -> EventStore:
    """alice: v1 started, v2 'Create a note', v3 'Done.', v4 'Thanks', v5 popped v4;
    bob: v1 started, v2 'Hi'."""
    store = backend.store(projectors=(HISTORY,))
    alice = StoreSession("alice", store)
    await alice.add_items([{"role": "user", "content": "Create a note"}])
    await alice.add_items([{"role": "assistant", "content": "Done."}])
    await alice.add_items([{"role": "user", "content": "Thanks"}])
    await alice.pop_item()
    await StoreSession("bob", store).add_items([{"role": "user", "content": "Hi"}])
    return store


def found(report: AuditReport) -> set[tuple[str | None, int | None]]:
    return {(f.stream_id, f.version) for f in report.findings}


async def payload(store: EventStore, sid: str, version: int) -> bytes:
    rows = await sql(
        store,
        "SELECT payload FROM convstore_events WHERE stream_id = :s AND version = :v",
        s=sid,
        v=version,
    )
    return bytes(rows[0][0])


async def set_payload(store: EventStore, sid: str, version: int, data: bytes) -> None:
    await sql(
        store,
        "UPDATE convstore_events SET payload = :p WHERE stream_id = :s AND version = :v",
        p=data,
        s=sid,
        v=version,
    )


async def test_a_clean_log_audits_clean(store: EventStore) -> None:
    report = await audit_database(store)
    assert report.ok, [str(f) for f in report.findings]
    last = 7 if store.dense_positions else (await store.read_all())[-1].position
    assert (report.streams, report.events, report.head_position) == (2, 7, last)


async def test_consistent_forgery_of_payload_and_projection(store: EventStore) -> None:
    forged = (await payload(store, "alice", 2)).replace(b"Create a note", b"Delete my notes")
    await set_payload(store, "alice", 2, forged)
    item = decode_event("ItemsAdded", 2, forged).items[0]  # type: ignore[union-attr]
    await sql(
        store,
        "UPDATE convstore_items SET item = :i WHERE stream_id = 'alice' AND seq = :seq",
        i=bytes(item),
        seq=2 << 20,
    )
    report = await audit_database(store)
    assert ("alice", 2) in found(report)
    assert "hash" in next(str(f) for f in report.findings if f.version == 2)
    assert not any(f.check == "projection" for f in report.findings)  # the forgery agrees


async def test_edited_popped_item(store: EventStore) -> None:
    forged = (await payload(store, "alice", 5)).replace(b'"seq":', b'"seq":1')
    await set_payload(store, "alice", 5, forged)
    report = await audit_database(store)
    assert ("alice", 5) in found(report)


async def test_edited_hash(store: EventStore) -> None:
    await sql(
        store,
        "UPDATE convstore_events SET hash = :h WHERE stream_id = 'alice' AND version = 3",
        h="ab" * 32,
    )
    report = await audit_database(store)
    assert {("alice", 3), ("alice", 4)} <= found(report)  # its own link and the next


async def test_changed_recorded_at(store: EventStore) -> None:
    await sql(
        store,
        "UPDATE convstore_events SET recorded_at = recorded_at - 3600000000 "
        "WHERE stream_id = 'alice' AND version = 2",
    )
    assert ("alice", 2) in found(await audit_database(store))


async def test_deleted_middle_events(store: EventStore) -> None:
    await sql(store, "DELETE FROM convstore_events WHERE stream_id = 'alice' AND version IN (2, 3)")
    report = await audit_database(store)
    text_of = {str(f) for f in report.findings}
    assert any("alice' v4: v2..v3 missing" in t for t in text_of), text_of
    if store.dense_positions:  # PostgreSQL's positions have gaps by design
        assert any(f.stream_id is None and "2 positions" in str(f) for f in report.findings)


async def test_deleted_last_event_with_its_projection_row(store: EventStore) -> None:
    await sql(store, "DELETE FROM convstore_events WHERE stream_id = 'bob' AND version = 2")
    await sql(store, "DELETE FROM convstore_items WHERE stream_id = 'bob'")
    report = await audit_database(store)
    assert any(
        f.stream_id == "bob" and "convstore_streams says version 2" in f.problem
        for f in report.findings
    ), [str(f) for f in report.findings]


async def test_deleted_stream(store: EventStore) -> None:
    await sql(store, "DELETE FROM convstore_events WHERE stream_id = 'bob'")
    await sql(store, "DELETE FROM convstore_items WHERE stream_id = 'bob'")
    report = await audit_database(store)
    assert ("bob", 2) in found(report)
    assert any("deleted outside convstore" in f.problem for f in report.findings)


async def test_stream_erased_everywhere_shows_as_missing_positions(store: EventStore) -> None:
    if not store.dense_positions:
        pytest.skip(
            "positions have gaps on PostgreSQL: a session erased from every table shows "
            "against checkpoints (test_checkpoints_name_a_session_erased_everywhere)"
        )
    for table in ("convstore_events", "convstore_items", "convstore_streams"):
        await sql(store, f"DELETE FROM {table} WHERE stream_id = 'bob'")
    report = await audit_database(store)
    assert [f.stream_id for f in report.findings] == [None]
    assert "2 positions" in report.findings[0].problem


async def test_reordering_with_the_projection_fixed_up(store: EventStore) -> None:
    two, three = await payload(store, "alice", 2), await payload(store, "alice", 3)
    await set_payload(store, "alice", 2, three)
    await set_payload(store, "alice", 3, two)
    # Fix the projection so it agrees with the reordered log.
    for version, data in ((2, three), (3, two)):
        item = decode_event("ItemsAdded", 2, data).items[0]  # type: ignore[union-attr]
        await sql(
            store,
            "UPDATE convstore_items SET item = :i WHERE stream_id = 'alice' AND seq = :seq",
            seq=version << 20,
            i=bytes(item),
        )
    report = await audit_database(store)
    assert {("alice", 2), ("alice", 3)} <= found(report)


async def test_reordering_by_version_numbers(store: EventStore) -> None:
    await sql(
        store, "UPDATE convstore_events SET version = 99 WHERE stream_id = 'alice' AND version = 2"
    )
    await sql(
        store, "UPDATE convstore_events SET version = 2 WHERE stream_id = 'alice' AND version = 3"
    )
    await sql(
        store, "UPDATE convstore_events SET version = 3 WHERE stream_id = 'alice' AND version = 99"
    )
    report = await audit_database(store)
    assert {("alice", 2), ("alice", 3)} <= found(report)
    assert any("reordered" in f.problem for f in report.findings)


async def test_undecodable_payload(store: EventStore) -> None:
    await set_payload(store, "alice", 3, b"\xff not json")
    report = await audit_database(store)
    assert any(f.version == 3 and "undecodable" in f.problem for f in report.findings)


async def test_changed_event_type(store: EventStore) -> None:
    await sql(
        store,
        "UPDATE convstore_events SET event_type = 'SessionCleared' "
        "WHERE stream_id = 'alice' AND version = 3",
    )
    assert ("alice", 3) in found(await audit_database(store))


async def test_appended_forged_event(store: EventStore) -> None:
    await sql(
        store,
        "INSERT INTO convstore_events (position, stream_id, version, event_id, event_type, "
        "schema_version, payload, recorded_at, hash) VALUES (8, 'bob', 3, "
        "'00000000-0000-0000-0000-000000000001', 'SessionCleared', 1, :p, 1, :h)",
        p=b'{"type":"SessionCleared"}',
        h="00" * 32,
    )
    report = await audit_database(store)
    assert ("bob", 3) in found(report)  # its hash, and the streams table is behind


async def test_edited_streams_row(store: EventStore) -> None:
    await sql(
        store, "UPDATE convstore_streams SET head_hash = :h WHERE stream_id = 'bob'", h="cd" * 32
    )
    assert ("bob", 2) in found(await audit_database(store))


async def test_projection_edited_alone(store: EventStore) -> None:
    await sql(store, "UPDATE convstore_items SET item = :i WHERE stream_id = 'bob'", i=b'"x"')
    report = await audit_database(store)
    assert [(f.stream_id, f.version, f.check) for f in report.findings] == [
        ("bob", 2, "projection")
    ]


async def test_projection_rows_of_a_session_the_log_does_not_have(store: EventStore) -> None:
    await sql(
        store,
        "INSERT INTO convstore_items (stream_id, branch_id, seq, item, kind) "
        "VALUES ('mallory', 'main', 1, :i, 'message')",
        i=b'"x"',
    )
    report = await audit_database(store)
    assert [f.stream_id for f in report.findings] == ["mallory"]


async def test_replay_refuses_a_tampered_log(store: EventStore) -> None:
    await sql(store, "UPDATE convstore_items SET item = :i WHERE stream_id = 'bob'", i=b'"x"')
    await replay(store)  # the log is sound: replay repairs the projection
    assert (await audit_database(store)).ok
    await sql(store, "DELETE FROM convstore_events WHERE stream_id = 'alice' AND version = 3")
    before = await sql(store, "SELECT count(*) FROM convstore_items")
    with pytest.raises(AuditFailedError, match="refusing to replay"):
        await replay(store)
    assert await sql(store, "SELECT count(*) FROM convstore_items") == before


async def test_a_consistent_rewrite_needs_a_checkpoint(store: EventStore) -> None:
    key = b"audit key held by the application"
    checkpoints = load_checkpoints(await take_checkpoints(store, key=key), key=key)
    # Rewrite alice v2 and recompute every later hash and the head, as an attacker
    # who knows the (public) chain rule of docs/audit.md would.
    forged = (await payload(store, "alice", 2)).replace(b"Create a note", b"Delete my notes")
    await set_payload(store, "alice", 2, forged)
    rows = await sql(
        store,
        "SELECT version, event_id, event_type, schema_version, recorded_at, payload "
        "FROM convstore_events WHERE stream_id = 'alice' ORDER BY version",
    )
    previous = GENESIS_HEX
    for version, event_id, event_type, schema_version, recorded_at, data in rows:
        previous = reference_hash(
            previous,
            stream_id="alice",
            version=version,
            event_id=event_id,
            event_type=event_type,
            schema_version=schema_version,
            recorded_at=recorded_at,
            payload=bytes(data),
        )
        await sql(
            store,
            "UPDATE convstore_events SET hash = :h WHERE stream_id = 'alice' AND version = :v",
            h=previous,
            v=version,
        )
    await sql(
        store, "UPDATE convstore_streams SET head_hash = :h WHERE stream_id = 'alice'", h=previous
    )
    assert (await audit_database(store, projections=False)).ok  # the chain alone is fooled
    report = await audit_database(store, checkpoints=checkpoints, projections=False)
    assert [(f.stream_id, f.version, f.check) for f in report.findings] == [
        ("alice", 5, "checkpoint")
    ]


async def test_checkpoints_name_a_session_erased_everywhere(store: EventStore) -> None:
    checkpoints = load_checkpoints(await take_checkpoints(store))
    for table in ("convstore_events", "convstore_items", "convstore_streams"):
        await sql(store, f"DELETE FROM {table} WHERE stream_id = 'bob'")
    await sql(store, "UPDATE convstore_head SET position = 5")  # hide the gap too
    await sql(store, "UPDATE convstore_tracking SET position = 5")
    assert (await audit_database(store)).ok  # bob held positions 6, 7: nothing is amiss
    report = await audit_database(store, checkpoints=checkpoints)
    assert ("bob", 2) in found(report)


async def test_deleted_sessions_leave_a_tombstone_that_audits_clean(store: EventStore) -> None:
    removed = await delete_session(store, "bob")
    assert (removed.session_id, removed.version) == ("bob", 2)
    report = await audit_database(store)
    assert report.ok, [str(f) for f in report.findings]
    assert report.removed_streams == 1
    assert await sql(store, "SELECT count(*) FROM convstore_items WHERE stream_id = 'bob'") == [
        (0,)
    ]
    # Removing the tombstone makes the removal look like what it then is: a deletion
    # (where positions are gapless; on PostgreSQL only checkpoints show it).
    await sql(store, "DELETE FROM convstore_tombstones")
    assert (await audit_database(store)).ok is not store.dense_positions


async def test_retention_removes_idle_sessions(store: EventStore) -> None:
    from datetime import timedelta

    assert [r.session_id for r in await retention(store, timedelta(0), dry_run=True)] == [
        "alice",
        "bob",
    ]
    assert (await audit_database(store)).ok  # a dry run changes nothing
    assert await retention(store, timedelta(days=1)) == []
    removed = await retention(store, timedelta(0))
    assert [r.session_id for r in removed] == ["alice", "bob"]
    assert await store.list_streams() == []
    report = await audit_database(store)
    assert report.ok
    assert report.removed_streams == 2
    # The id can be used again: a new stream, audited like any other.
    await StoreSession("bob", store).add_items([{"role": "user", "content": "back"}])
    assert (await audit_database(store)).ok


async def test_retention_refuses_a_tampered_session(store: EventStore) -> None:
    from datetime import timedelta

    from eventstore import IntegrityError

    await sql(store, "DELETE FROM convstore_events WHERE stream_id = 'alice' AND version = 3")
    with pytest.raises(IntegrityError, match="alice"):
        await retention(store, timedelta(0))


async def test_delete_refuses_a_session_whose_chain_does_not_verify(store: EventStore) -> None:
    from eventstore import IntegrityError

    # Versions intact, one event's time edited: only its hash gives it away.
    await sql(
        store,
        "UPDATE convstore_events SET recorded_at = recorded_at + 1 "
        "WHERE stream_id = 'alice' AND version = 2",
    )
    with pytest.raises(IntegrityError, match="'alice' v2 does not pass its audit"):
        await delete_session(store, "alice")
    assert [e.version for e in await store.read_stream("alice")] == [1, 2, 3, 4, 5]


async def test_delete_refuses_a_session_whose_streams_row_was_edited(store: EventStore) -> None:
    from eventstore import IntegrityError

    await sql(store, "UPDATE convstore_streams SET version = 4 WHERE stream_id = 'alice'")
    with pytest.raises(IntegrityError, match="does not end where convstore_streams says"):
        await delete_session(store, "alice")
    assert [e.version for e in await store.read_stream("alice")] == [1, 2, 3, 4, 5]


async def test_writers_go_on_while_audit_reads_its_snapshot(shared_backend: Backend) -> None:
    """An append from another connection commits while the audit is in the middle of
    its read, and the audit reports the snapshot it started with (no lock held)."""
    import asyncio
    import threading

    store = shared_backend.store(projectors=(HISTORY,))
    for name in ("a", "b", "c"):
        await StoreSession(name, store).add_items([{"role": "user", "content": name}])
    appended: list[int] = []

    async def append_elsewhere() -> None:
        async with EventStore(shared_backend.target, projectors=[HISTORY]) as other:
            await StoreSession("a", other).add_items([{"role": "user", "content": "more"}])
            appended.append(await other.head_position())

    def during_audit(count: int) -> None:
        if not appended:  # once, in the middle of the scan
            writer = threading.Thread(target=asyncio.run, args=(append_elsewhere(),))
            writer.start()
            writer.join(timeout=60)
            assert appended, "the append waited for the audit"

    report = await audit_database(store, progress=during_audit)
    assert report.ok, [str(f) for f in report.findings]
    if store.dense_positions:
        assert appended == [7]
        assert report.head_position == 6  # the snapshot, not the append made meanwhile
    else:
        assert report.head_position < appended[0]  # the snapshot, not the later append
    assert (await audit_database(store)).head_position == appended[0]


async def test_two_audits_at_once(shared_backend: Backend) -> None:
    import asyncio

    store = shared_backend.store(projectors=(HISTORY,))
    await StoreSession("a", store).add_items([{"role": "user", "content": "x"}] * 5)
    other = shared_backend.store(projectors=(HISTORY,))
    first, second = await asyncio.gather(audit_database(store), audit_database(other))
    assert first.ok
    assert second.ok


async def test_a_payload_edited_into_text_is_a_finding(store: EventStore) -> None:
    """SQLite's replace() turns a BLOB into TEXT: audit reports the edit, not a crash."""
    if store.dialect_name != "sqlite":
        pytest.skip("only SQLite lets a BLOB column hold TEXT")
    await sql(
        store,
        "UPDATE convstore_events SET payload = replace(payload, 'note', 'list') "
        "WHERE stream_id = 'alice' AND version = 2",
    )
    assert await sql(
        store,
        "SELECT typeof(payload) FROM convstore_events WHERE version = 2 AND stream_id = 'alice'",
    ) == [("text",)]
    report = await audit_database(store)
    assert ("alice", 2) in found(report)
    assert "hash" in next(str(f) for f in report.findings if f.version == 2)

"""Export and import: lossless, idempotent, and refusing what does not verify."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from eventstore import EventStore, IntegrityError, InvalidArgumentError
from sessions import StoreSession
from sessions.admin import NotFoundError, audit_database, open_store, session_history
from sessions.base import HISTORY
from sessions.transfer import export_events, export_line, import_events, read_lines

from .conftest import Backend


async def fill(store: EventStore) -> None:
    alice = StoreSession("alice", store)
    await alice.add_items([{"role": "user", "content": "héllo ☃", "n": 1.5e300}])
    await alice.add_items([{"type": "function_call", "arguments": '{"a": [1, 2]}'}])
    await alice.pop_item()
    bob = StoreSession("bob", store)
    await bob.add_items([{"role": "user", "content": "line\nbreak"}] * 3)
    await bob.clear_session()
    await alice.add_items([{"role": "assistant", "content": "ok"}])


async def export_bytes(store: EventStore, session: str | None = None) -> bytes:
    out = io.BytesIO()
    await export_events(store, out, session=session)
    return out.getvalue()


def same_events(a: bytes, b: bytes, *stores: EventStore) -> bool:
    """Byte for byte, on every backend: an export carries no positions (they belong
    to the database; on PostgreSQL they come from the writing transaction)."""
    assert b'"position"' not in a
    return a == b


@pytest.fixture
async def source(backend: Backend) -> EventStore:
    store = backend.store(projectors=(HISTORY,))
    await fill(store)
    return store


async def test_export_import_export_is_byte_identical(source: EventStore, tmp_path: Path) -> None:
    first = await export_bytes(source)
    assert first.count(b"\n") == 8
    async with open_store(tmp_path / "copy.db", create=True) as target:
        result = await import_events(target, io.BytesIO(first))
        assert (result.imported, result.skipped, result.sessions) == (8, 0, 2)
        assert same_events(await export_bytes(target), first, source, target)
        report = await audit_database(target)
        assert report.ok, [str(f) for f in report.findings]
        assert await session_history(target, "alice") == await session_history(source, "alice")
        assert await session_history(target, "alice", as_of=3) == await session_history(
            source, "alice", as_of=3
        )


async def test_import_into_every_backend(backend: Backend, tmp_path: Path) -> None:
    async with open_store(tmp_path / "source.db", create=True) as source:
        await fill(source)
        exported = await export_bytes(source)
    target = backend.store(projectors=(HISTORY,))
    await import_events(target, io.BytesIO(exported))
    assert same_events(await export_bytes(target), exported, target)
    assert (await audit_database(target)).ok


async def test_importing_twice_skips_what_is_there(source: EventStore, tmp_path: Path) -> None:
    exported = await export_bytes(source)
    async with open_store(tmp_path / "copy.db", create=True) as target:
        await import_events(target, io.BytesIO(exported[: exported.index(b"\n", 300) + 1]))
        result = await import_events(target, io.BytesIO(exported))  # resumes
        assert result.skipped >= 1
        assert result.skipped + result.imported == 8
        again = await import_events(target, io.BytesIO(exported))
        assert (again.imported, again.skipped) == (0, 8)
        assert same_events(await export_bytes(target), exported, source, target)
        assert (await audit_database(target)).ok


async def test_import_refuses_a_different_history(source: EventStore, tmp_path: Path) -> None:
    exported = await export_bytes(source)
    async with open_store(tmp_path / "other.db", create=True) as target:
        await StoreSession("alice", target).add_items([{"role": "user", "content": "mine"}])
        before = await export_bytes(target)
        with pytest.raises(IntegrityError, match="'alice' v1: the database already has"):
            await import_events(target, io.BytesIO(exported))
        assert await export_bytes(target) == before


async def test_import_refuses_an_edited_file(source: EventStore, tmp_path: Path) -> None:
    exported = (await export_bytes(source)).replace(b"\\u2603", b"snowman", 1)
    exported = exported.replace("☃".encode(), b"snowman", 1)
    async with open_store(tmp_path / "copy.db", create=True) as target:
        with pytest.raises(IntegrityError, match="'alice' v2: its hash does not verify"):
            await import_events(target, io.BytesIO(exported))
        assert await export_bytes(target) == b""


async def test_bad_lines_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="line 2"):
        list(read_lines(io.BytesIO(b"\n{not json}\n")))
    line = (
        b'{"position":1,"stream_id":"s","version":1,"event_id":"e","event_type":"SessionStarted",'
        b'"schema_version":1,"recorded_at":0,"hash":"00","payload_base64":"not base64!"}\n'
    )
    async with open_store(tmp_path / "x.db", create=True) as target:
        with pytest.raises(InvalidArgumentError, match="s v1: payload_base64 is not base64"):
            await import_events(target, io.BytesIO(line))


async def test_export_one_session(source: EventStore) -> None:
    lines = list(read_lines(io.BytesIO(await export_bytes(source, "bob"))))
    assert [(e.stream_id, e.version) for e in lines] == [("bob", v) for v in (1, 2, 3)]
    with pytest.raises(NotFoundError):
        await export_bytes(source, "nobody")


def test_a_payload_that_is_not_json_line_travels_as_base64() -> None:
    class Row:
        position, stream_id, version, event_id = 1, "s", 1, "e"
        event_type, schema_version, recorded_at, hash = "SessionStarted", 1, 0, "00"
        payload = b'{"type":\n"SessionStarted"}'

    line = export_line(Row)
    assert b"payload_base64" in line
    (event,) = read_lines(io.BytesIO(line))
    assert event.payload_bytes() == Row.payload
    assert export_line(Row) == line


async def test_branches_audit_export_import_and_retention(tmp_path: Path) -> None:
    """Sessions with branches: audited, copied byte for byte, removed without leftovers."""
    from datetime import timedelta

    from sessions import AdvancedSQLiteSession
    from sessions.admin import retention

    db = tmp_path / "branches.db"
    async with AdvancedSQLiteSession(session_id="s", db_path=db) as session:
        await session.add_items([{"role": "user", "content": "one"}])
        await session.add_items([{"role": "assistant", "content": "1"}])
        await session.add_items([{"role": "user", "content": "two"}])
        branch = await session.create_branch_from_turn(2, "retry")
        await session.add_items([{"role": "user", "content": "two, again"}])
        on_branch = await session.get_items()
    async with open_store(db) as store:
        assert (await audit_database(store)).ok
        exported = await export_bytes(store)
    async with open_store(tmp_path / "copy.db", create=True) as copy:
        await import_events(copy, io.BytesIO(exported))
        assert await export_bytes(copy) == exported
        report = await audit_database(copy)
        assert report.ok, [str(f) for f in report.findings]
        assert await session_history(copy, "s", branch=branch) == on_branch
        assert [r.session_id for r in await retention(copy, timedelta(0))] == ["s"]
        report = await audit_database(copy)
        assert report.ok, [str(f) for f in report.findings]

"""Export and import: lossless, idempotent, and refusing what does not verify."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from eventstore import EventStore, IntegrityError, InvalidArgumentError
from sessions import StoreSession, transfer
from sessions.admin import NotFoundError, audit_database, open_store, session_history
from sessions.base import HISTORY
from sessions.transfer import (
    LineTooLongError,
    export_events,
    export_line,
    import_events,
    read_lines,
)

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
        with pytest.raises(IntegrityError) as refused:
            await import_events(target, io.BytesIO(exported))
        assert await export_bytes(target) == before
    message = str(refused.value)
    assert message.startswith("line 1: session 'alice' v1: the database has another event")
    assert "event_id '" in message  # what differs, field by field
    assert "nothing of this batch was imported" in message


async def test_import_refuses_an_edited_file(source: EventStore, tmp_path: Path) -> None:
    exported = (await export_bytes(source)).replace(b"\\u2603", b"snowman", 1)
    exported = exported.replace("☃".encode(), b"snowman", 1)
    async with open_store(tmp_path / "copy.db", create=True) as target:
        with pytest.raises(IntegrityError, match="line 2: session 'alice' v2: its hash does not"):
            await import_events(target, io.BytesIO(exported))
        assert await export_bytes(target) == b""


async def test_bad_lines_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="line 2"):
        list(read_lines(io.BytesIO(b"\n{not json}\n")))
    line = (
        b'{"position":1,"stream_id":"s","version":1,"event_id":"e","event_type":"SessionStarted",'
        b'"schema_version":1,"recorded_at":0,"hash":"' + b"0" * 64 + b'",'
        b'"payload_base64":"not base64!"}\n'
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
        event_type, schema_version, recorded_at, hash = "SessionStarted", 1, 0, "0" * 64
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


# -- repeated lines, conflicts, long lines, files refused before anything is written ---


async def test_a_line_repeated_exactly_is_already_there(
    source: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = await export_bytes(source)
    lines = exported.splitlines(keepends=True)
    async with open_store(tmp_path / "copy.db", create=True) as target:
        # In one batch, and (batches of 3) in a later batch than its first copy.
        result = await import_events(target, io.BytesIO(exported + exported))
        assert (result.imported, result.skipped) == (8, 8)
    monkeypatch.setattr(transfer, "BATCH_SIZE", 3)
    async with open_store(tmp_path / "other.db", create=True) as target:
        result = await import_events(target, io.BytesIO(b"".join([*lines, lines[0], lines[4]])))
        assert (result.imported, result.skipped) == (8, 2)
        assert same_events(await export_bytes(target), exported, target)
        assert (await audit_database(target)).ok


def _edited(line: bytes, **fields: object) -> bytes:
    event = json.loads(line)
    event.update(fields)
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


async def test_a_repeated_line_that_differs_is_explained(
    source: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = (await export_bytes(source)).splitlines(keepends=True)
    changed = _edited(lines[1], recorded_at=json.loads(lines[1])["recorded_at"] + 1)
    async with open_store(tmp_path / "copy.db", create=True) as target:
        with pytest.raises(IntegrityError) as refused:
            await import_events(target, io.BytesIO(b"".join([*lines, changed])))
        assert str(refused.value).startswith(
            "line 9: session 'alice' v2: line 2 of the file has another event at that version "
            "(recorded_at "
        )
        assert await export_bytes(target) == b""
    monkeypatch.setattr(transfer, "BATCH_SIZE", 8)  # the repeat meets the database's event
    async with open_store(tmp_path / "copy.db", create=True) as target:
        with pytest.raises(
            IntegrityError, match=r"line 9: .* does not verify \(the file was changed\)"
        ):
            await import_events(target, io.BytesIO(b"".join([*lines, changed])))
        assert len((await export_bytes(target)).splitlines()) == 8  # the first batch


class _Endless(io.RawIOBase):
    """A file of one line of ``size`` bytes, made as it is read; counts what was read."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = b"x" * count
        self.left -= count
        self.served += count
        return count


async def test_a_line_past_the_bound_is_refused_unread(tmp_path: Path) -> None:
    raw = _Endless(300 * 1024 * 1024)  # a 300 MB line
    async with open_store(tmp_path / "copy.db", create=True) as target:
        with pytest.raises(LineTooLongError, match="line 1 is longer than 1,048,576 bytes") as e:
            await import_events(target, io.BufferedReader(raw), max_line_bytes=1024 * 1024)
        assert (e.value.line, e.value.limit) == (1, 1024 * 1024)
        assert raw.served <= 1024 * 1024 + io.DEFAULT_BUFFER_SIZE  # the rest was never read
    assert isinstance(e.value, InvalidArgumentError)


async def test_the_bound_is_a_lines_length(source: EventStore, tmp_path: Path) -> None:
    exported = await export_bytes(source)
    longest = max(len(line) for line in exported.splitlines())
    async with open_store(tmp_path / "copy.db", create=True) as target:
        with pytest.raises(LineTooLongError):
            await import_events(target, io.BytesIO(exported), max_line_bytes=longest - 1)
        result = await import_events(target, io.BytesIO(exported), max_line_bytes=longest)
        assert result.imported == 8
    assert list(read_lines(io.BytesIO(exported.rstrip(b"\n")), max_line_bytes=longest))
    with pytest.raises(InvalidArgumentError, match="max_line_bytes"):
        list(read_lines(io.BytesIO(exported), max_line_bytes=0))


async def test_a_file_refused_late_imports_nothing(
    source: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is read once before anything is written: a tampered last line leaves the
    target as it was, though batches before it would have verified."""
    monkeypatch.setattr(transfer, "BATCH_SIZE", 2)
    exported = await export_bytes(source)
    lines = exported.splitlines(keepends=True)
    tampered = b"".join(lines[:-1]) + lines[-1].replace(b'"ok"', b'"ko"')
    async with open_store(tmp_path / "copy.db", create=True) as target:
        with pytest.raises(IntegrityError, match="line 8: session 'alice' v5: its hash"):
            await import_events(target, io.BytesIO(tampered))
        assert await export_bytes(target) == b""
        missing = b"".join(lines[:3] + lines[4:])  # alice v4 left out
        with pytest.raises(
            IntegrityError, match="line 7: session 'alice' v5: the file skips from v3"
        ):
            await import_events(target, io.BytesIO(missing))
        assert await export_bytes(target) == b""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stream_id": ""}, "line 1: a stream id must be a non-empty string"),
        ({"stream_id": "a\u0000b"}, "line 1: a stream id cannot contain NUL"),
        ({"version": 0}, "Expected `int` >= 1 - at `$.version`"),
        ({"recorded_at": 10**18}, "at `$.recorded_at`"),
        ({"hash": "not hex"}, "at `$.hash`"),
        ({"event_id": "e" * 37}, "at `$.event_id`"),
    ],
)
async def test_hostile_lines_are_refused_by_name(
    source: EventStore, tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    first = (await export_bytes(source)).splitlines(keepends=True)[0]
    async with open_store(tmp_path / "copy.db", create=True) as target:
        with pytest.raises(InvalidArgumentError, match=re.escape(message)):
            await import_events(target, io.BytesIO(_edited(first, **fields)))
        assert await export_bytes(target) == b""

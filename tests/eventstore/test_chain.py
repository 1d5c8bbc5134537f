"""The hash chain covers every field docs/audit.md says it covers.

Two kinds of check, neither of which reuses :func:`eventstore.chain.chain_hash` to
compute an expected value:

* known answers: fixed events whose hashes were computed from the documented byte
  layout (``chain_check.reference_hash``: :mod:`hashlib` and :mod:`json`), written out
  below as literals, and the store's own appends recomputed the same way;
* tampering: each hashed field of one stored event changed with raw SQL on every
  backend, and ``audit`` naming that event's hash. Each edit is made so that the
  chain's link is the only thing that can tell (the same previous hash, versions still
  counting 1, 2, 3 … where possible): if the field were dropped from the hash, the
  audit would stop reporting it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

from eventstore import (
    AuditReport,
    EventStore,
    ItemPopped,
    ItemsAdded,
    NewEvent,
    SessionStarted,
    encode_items,
)
from eventstore.audit import audit
from eventstore.chain import GENESIS, chain_hash

from ..conftest import Backend
from .chain_check import GENESIS_HEX, assert_chain_valid, header_bytes, reference_hash

# -- known answers -------------------------------------------------------------------

# Three events of one stream, every field fixed. The stream id has non-ASCII
# characters and a quote, so the header's JSON escaping is pinned too.
STREAM = 'zoë/日本 "q"'
FIXED: list[dict[str, Any]] = [
    {
        "stream_id": STREAM,
        "version": 1,
        "event_id": "00000000-0000-4000-8000-000000000001",
        "event_type": "SessionStarted",
        "schema_version": 1,
        "recorded_at": 1767225600000000,
        "payload": b'{"type":"SessionStarted","metadata":{}}',
    },
    {
        "stream_id": STREAM,
        "version": 2,
        "event_id": "00000000-0000-4000-8000-000000000002",
        "event_type": "ItemsAdded",
        "schema_version": 2,
        "recorded_at": 1767225600000001,
        "payload": '{"type":"ItemsAdded","items":[{"role":"user","content":"Grüß dich"}]}'.encode(),
    },
    {
        "stream_id": STREAM,
        "version": 3,
        "event_id": "00000000-0000-4000-8000-000000000003",
        "event_type": "ItemPopped",
        "schema_version": 1,
        "recorded_at": 1767225600000002,
        "payload": b'{"type":"ItemPopped","seq":2097152}',
    },
]
# SHA-256(previous || header || payload) of FIXED, computed once from the layout
# docs/audit.md gives (by ``reference_hash``, itself only hashlib and json).
EXPECTED = [
    "0f81abb2fe8c0d79ec996781b90f7e6f5084e7697d4d4f6471ad9316b377d537",
    "086044282933844dca2eef996d672be64e8e7da7f645082fd271df63c71ea6bb",
    "c9e2b861fc70a88290bb1dfde1d7223bbf0e688d9074b3477a5298d5f8ee2bf6",
]


def test_the_documented_header_bytes() -> None:
    assert (
        header_bytes(**{k: v for k, v in FIXED[0].items() if k != "payload"})
        == (
            '["zoë/日本 \\"q\\"",1,"00000000-0000-4000-8000-000000000001","SessionStarted",'
            "1,1767225600000000]"
        ).encode()
    )
    assert GENESIS == GENESIS_HEX  # the first event chains to 32 zero bytes


def test_the_reference_gives_the_known_answers() -> None:
    previous = GENESIS_HEX
    for fields, expected in zip(FIXED, EXPECTED, strict=True):
        previous = reference_hash(previous, **fields)
        assert previous == expected


def test_chain_hash_gives_the_known_answers() -> None:
    previous = GENESIS
    for fields, expected in zip(FIXED, EXPECTED, strict=True):
        previous = chain_hash(previous, **fields)
        assert previous == expected, f"v{fields['version']}"


CHANGED: dict[str, Any] = {
    "previous": "11" * 32,
    "stream_id": "zoe",
    "version": 7,
    "event_id": "00000000-0000-4000-8000-000000000009",
    "event_type": "ItemsAdded",
    "schema_version": 3,
    "recorded_at": 1767225600000009,
    "payload": b'{"type":"SessionStarted","metadata":{"a":"b"}}',
}


@pytest.mark.parametrize("field", list(CHANGED))
def test_each_field_changes_the_hash(field: str) -> None:
    fields = dict(FIXED[0], previous=GENESIS)
    changed = dict(fields, **{field: CHANGED[field]})
    assert chain_hash(**changed) != chain_hash(**fields)
    assert chain_hash(**changed) == reference_hash(**changed)


async def test_the_store_writes_the_documented_chain(backend: Backend) -> None:
    """Hashes written by an append (single and batched, new and existing stream) are the
    documented hash of the stored fields."""
    store = backend.store()
    ids = [uuid.UUID(f["event_id"]) for f in FIXED]
    await store.append(STREAM, [NewEvent(SessionStarted(), ids[0])])
    await store.append(
        STREAM,
        [
            NewEvent(ItemsAdded(items=encode_items([{"content": "Grüß dich"}])), ids[1]),
            NewEvent(ItemPopped(seq=2 << 20), ids[2]),
        ],
    )
    events = await store.read_stream(STREAM)
    assert [(e.event_id, e.event_type) for e in events] == [
        (f["event_id"], f["event_type"]) for f in FIXED
    ]
    head = assert_chain_valid(events)
    streams = await store.list_streams()
    assert [(s.stream_id, s.head_hash) for s in streams] == [(STREAM, head)]


# -- tampering with each hashed field --------------------------------------------------


async def sql(store: EventStore, statement: str, **params: Any) -> None:
    await store.run(lambda conn: conn.execute(text(statement), params), write=True)


async def rename_stream(store: EventStore) -> None:
    """bob's whole stream (and its streams row) filed under another session."""
    for table in ("convstore_events", "convstore_streams"):
        await sql(store, f"UPDATE {table} SET stream_id = 'carol' WHERE stream_id = 'bob'")


async def renumber_last(store: EventStore) -> None:
    """alice's last event moved from v4 to v5, the streams row to match."""
    await sql(
        store, "UPDATE convstore_events SET version = 5 WHERE stream_id = 'alice' AND version = 4"
    )
    await sql(store, "UPDATE convstore_streams SET version = 5 WHERE stream_id = 'alice'")


async def new_event_id(store: EventStore) -> None:
    await sql(
        store,
        "UPDATE convstore_events SET event_id = :i WHERE stream_id = 'alice' AND version = 2",
        i=str(uuid.uuid4()),
    )


async def other_event_type(store: EventStore) -> None:
    await sql(
        store,
        "UPDATE convstore_events SET event_type = 'SessionCleared' "
        "WHERE stream_id = 'alice' AND version = 3",
    )


async def other_schema_version(store: EventStore) -> None:
    await sql(
        store,
        "UPDATE convstore_events SET schema_version = 1 WHERE stream_id = 'alice' AND version = 2",
    )


async def other_payload(store: EventStore) -> None:
    rows = await store.run(
        lambda conn: conn.execute(
            text("SELECT payload FROM convstore_events WHERE stream_id = 'alice' AND version = 2")
        ).all()
    )
    forged = bytes(rows[0][0]).replace(b"Create a note", b"Delete my notes")
    await sql(
        store,
        "UPDATE convstore_events SET payload = :p WHERE stream_id = 'alice' AND version = 2",
        p=forged,
    )


async def other_recorded_at(store: EventStore) -> None:
    await sql(
        store,
        "UPDATE convstore_events SET recorded_at = recorded_at - 1 "
        "WHERE stream_id = 'alice' AND version = 2",
    )


async def other_previous_hash(store: EventStore) -> None:
    """v2's stored hash changed: v2's own link breaks, and v3's, which chains to it."""
    await sql(
        store,
        "UPDATE convstore_events SET hash = :h WHERE stream_id = 'alice' AND version = 2",
        h="ab" * 32,
    )


Tamper = Callable[[EventStore], Awaitable[None]]
TAMPERS: dict[str, tuple[Tamper, set[tuple[str, int]]]] = {
    "stream_id": (rename_stream, {("carol", 1), ("carol", 2)}),
    "version": (renumber_last, {("alice", 5)}),
    "event_id": (new_event_id, {("alice", 2)}),
    "event_type": (other_event_type, {("alice", 3)}),
    "schema_version": (other_schema_version, {("alice", 2)}),
    "payload": (other_payload, {("alice", 2)}),
    "recorded_at": (other_recorded_at, {("alice", 2)}),
    "previous hash": (other_previous_hash, {("alice", 2), ("alice", 3)}),
}


def hash_findings(report: AuditReport) -> set[tuple[str | None, int | None]]:
    return {
        (f.stream_id, f.version)
        for f in report.findings
        if f.problem.startswith("stored hash does not match")
    }


@pytest.mark.parametrize("field", list(TAMPERS))
async def test_audit_catches_an_edit_of_each_hashed_field(backend: Backend, field: str) -> None:
    store = backend.store()
    await store.append("alice", [SessionStarted()])
    await store.append("alice", [ItemsAdded(items=encode_items(["Create a note"]))])
    await store.append("alice", [ItemsAdded(items=encode_items(["Done."]))])
    await store.append("alice", [ItemPopped(seq=3 << 20)])
    await store.append("bob", [SessionStarted(), ItemsAdded(items=encode_items(["Hi"]))])
    assert (await audit(store)).ok
    tamper, expected = TAMPERS[field]
    await tamper(store)
    report = await audit(store)
    assert hash_findings(report) == expected, [str(f) for f in report.findings]

"""Old revisions of an event stay readable: the stored bytes are lifted on read."""

from __future__ import annotations

import msgspec
import pytest
from sqlalchemy import Connection

from eventstore import DecodeError, ItemsAdded, decode_event, decode_item
from eventstore.chain import GENESIS

from ..conftest import Backend
from .raw_events import insert_items_added

# What the first release wrote for an ItemsAdded: its items were called "messages".
REVISION_1 = msgspec.json.encode(
    {"type": "ItemsAdded", "messages": [{"role": "user", "content": "from release 1"}]}
)


def _insert_revision_1(conn: Connection) -> None:
    insert_items_added(
        conn, stream_id="old", version=1, position=1, payload=REVISION_1, hash=GENESIS
    )


async def test_revision_1_items_added_is_upcast_on_read(backend: Backend) -> None:
    store = backend.store()
    await store.ensure_tables()
    await store.run(_insert_revision_1, write=True)
    [event] = await store.read_stream("old")
    assert event.schema_version == 1
    assert event.payload == REVISION_1  # the stored bytes are never rewritten
    assert isinstance(event.event, ItemsAdded)
    assert event.event.branch_id == "main"
    assert [decode_item(i) for i in event.event.items] == [
        {"role": "user", "content": "from release 1"}
    ]


def test_a_newer_revision_than_known_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="upgrade convstore"):
        decode_event("ItemsAdded", ItemsAdded.schema_version + 1, b"{}")


@pytest.mark.parametrize(
    ("event_type", "revision", "payload"),
    [
        ("NoSuchEvent", 1, b"{}"),
        ("ItemsAdded", 1, b'{"type": "ItemsAdded"}'),
        ("ItemsAdded", 2, b"not json"),
        ("ItemsAdded", 2, b'{"type": "SessionCleared"}'),
    ],
)
def test_undecodable_payloads_are_decode_errors(
    event_type: str, revision: int, payload: bytes
) -> None:
    with pytest.raises(DecodeError):
        decode_event(event_type, revision, payload)

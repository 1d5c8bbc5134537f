from __future__ import annotations

from eventstore import ItemsAdded, SessionStarted, encode_items

from ..conftest import Backend


async def test_append_then_read(backend: Backend) -> None:
    store = backend.store()
    items = encode_items([{"role": "user", "content": "hi"}])
    result = await store.append("s", [ItemsAdded(items=items)], on_new_stream=[SessionStarted()])
    assert (result.first_version, result.last_version) == (2, 2)
    events = await store.read_stream("s")
    assert [e.event_type for e in events] == ["SessionStarted", "ItemsAdded"]

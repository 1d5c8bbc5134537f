"""eventstore.audit.audit_stream: the audit's findings about one stream, on every
backend: none for an honest stream, the edit for one changed behind the store's back."""

from __future__ import annotations

from sqlalchemy import delete, update

from eventstore import ItemsAdded, encode_items, schema
from eventstore.audit import audit_stream

from ..conftest import Backend


async def test_one_stream_s_audit(backend: Backend) -> None:
    store = backend.store()
    for n in range(3):
        await store.append("a", [ItemsAdded(items=encode_items([n]))])
        await store.append("b", [ItemsAdded(items=encode_items([n]))])
    assert await audit_stream(store, "a") == ()
    assert await audit_stream(store, "nobody") == ()
    e = schema.events

    def edit(conn: object) -> None:
        conn.execute(  # type: ignore[attr-defined]
            update(e)
            .where(e.c.stream_id == "a", e.c.version == 2)
            .values(payload=b'{"type":"ItemsAdded","items":[99],"branch_id":"main"}')
        )
        conn.execute(delete(e).where(e.c.stream_id == "b", e.c.version == 2))  # type: ignore[attr-defined]

    await store.run(edit, write=True)
    edited = await audit_stream(store, "a")
    assert [(f.version, f.problem) for f in edited if "hash" in f.problem] == [
        (
            2,
            "stored hash does not match the event's fields and the previous hash "
            "(the event, or the hash, was changed)",
        )
    ]
    removed = await audit_stream(store, "b")
    assert any(f.version == 3 and "v2 missing" in f.problem for f in removed)

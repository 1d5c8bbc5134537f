"""Writing an ``ItemsAdded`` row straight into the log, as another release or encoder
would have stored it (tests of upcasting and of payloads in another layout)."""

from __future__ import annotations

from sqlalchemy import Connection, insert

from eventstore import schema


def insert_items_added(
    conn: Connection, *, stream_id: str, version: int, position: int, payload: bytes, hash: str
) -> None:
    """One ``ItemsAdded`` event of schema revision 1 holding ``payload`` as stored, its
    event id derived from ``version``, recorded at time 0."""
    conn.execute(
        insert(schema.events).values(
            position=position,
            stream_id=stream_id,
            version=version,
            event_id=f"00000000-0000-0000-0000-{version:012d}",
            event_type="ItemsAdded",
            schema_version=1,
            payload=payload,
            recorded_at=0,
            hash=hash,
        )
    )

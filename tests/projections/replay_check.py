"""Test helper: every projection of a store equals the pure fold of the log."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Connection

from eventstore import EventStore, RecordedEvent, Rows


async def assert_matches_replay(store: EventStore) -> None:
    """Compare, stream by stream, each live projection's rows with a replay."""
    await store.ensure_tables()
    by_stream: dict[str, list[RecordedEvent]] = defaultdict(list)
    for recorded in await store.read_all():
        by_stream[recorded.stream_id].append(recorded)

    def live(conn: Connection) -> dict[str, dict[str, Rows]]:
        found: dict[str, dict[str, Rows]] = {}
        for projector in store.projectors:
            ids = projector.stream_ids(conn) | set(by_stream)
            found[projector.name] = {sid: projector.live_rows(conn, sid) for sid in ids}
        return found

    rows = await store.run(live, write=True)
    for projector in store.projectors:
        for stream_id, live_rows in rows[projector.name].items():
            expected = projector.expected_rows(stream_id, by_stream.get(stream_id, []))
            tables = expected.keys() | live_rows.keys()
            for table in tables:
                assert live_rows.get(table, {}) == expected.get(table, {}), (
                    f"{projector.name}.{table} of {stream_id!r} differs from a replay"
                )

"""Recompute a stream's hash chain from the stored fields, as an auditor would."""

from __future__ import annotations

from collections.abc import Sequence

from eventstore import RecordedEvent
from eventstore.chain import GENESIS, chain_hash
from eventstore.records import to_micros


def assert_chain_valid(events: Sequence[RecordedEvent]) -> str:
    """Check every stored hash of one stream, oldest first; return the head hash."""
    previous = GENESIS
    for event in events:
        expected = chain_hash(
            previous,
            stream_id=event.stream_id,
            version=event.version,
            event_id=event.event_id,
            event_type=event.event_type,
            schema_version=event.schema_version,
            recorded_at=to_micros(event.recorded_at),
            payload=event.payload,
        )
        assert event.hash == expected, f"{event.stream_id} v{event.version}: hash differs"
        previous = expected
    return previous

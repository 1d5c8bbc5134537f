"""Recompute a stream's hash chain from the stored fields, as an auditor would.

The hash is computed here from the byte layout that docs/audit.md spells out, with
:mod:`hashlib` and :mod:`json` only, never with :func:`eventstore.chain.chain_hash`: a
check that reused the implementation could not disagree with it, so it would not
notice a field dropped from the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from eventstore import RecordedEvent
from eventstore.records import to_micros

# The "previous hash" of a stream's first event: 32 zero bytes, written as hex.
GENESIS_HEX = "0" * 64


def header_bytes(
    *,
    stream_id: str,
    version: int,
    event_id: str,
    event_type: str,
    schema_version: int,
    recorded_at: int,
) -> bytes:
    """The header as docs/audit.md lays it out: a JSON array, no whitespace, UTF-8,
    non-ASCII characters as themselves (only ``"``, ``\\`` and control characters
    are escaped)."""
    fields = [stream_id, version, event_id, event_type, schema_version, recorded_at]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def reference_hash(
    previous: str,
    *,
    stream_id: str,
    version: int,
    event_id: str,
    event_type: str,
    schema_version: int,
    recorded_at: int,
    payload: bytes,
) -> str:
    """``SHA-256(previous hash as 32 bytes || header || payload)`` as lowercase hex."""
    header = header_bytes(
        stream_id=stream_id,
        version=version,
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        recorded_at=recorded_at,
    )
    return hashlib.sha256(bytes.fromhex(previous) + header + payload).hexdigest()


def assert_chain_valid(events: Sequence[RecordedEvent]) -> str:
    """Check every stored hash of one stream, oldest first; return the head hash."""
    previous = GENESIS_HEX
    for event in events:
        expected = reference_hash(
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

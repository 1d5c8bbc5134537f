"""The per-stream hash chain that makes tampering evident.

``hash(n) = SHA-256(hash(n-1) || header(n) || payload(n))`` where the header is the
JSON array ``[stream_id, version, event_id, event_type, schema_version, recorded_at]``
(self-delimiting, so header and payload cannot be confused). Changing, removing or
reordering any event of a stream changes every hash after it.
"""

from __future__ import annotations

import hashlib

import msgspec

GENESIS = "0" * 64

_header = msgspec.json.Encoder()


def chain_hash(
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
    """The hash of one event, chained to the hash of the event before it."""
    digest = hashlib.sha256(bytes.fromhex(previous))
    digest.update(
        _header.encode([stream_id, version, event_id, event_type, schema_version, recorded_at])
    )
    digest.update(payload)
    return digest.hexdigest()

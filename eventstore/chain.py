"""The per-stream hash chain that makes tampering evident.

``hash(n) = SHA-256(hash(n-1) || header(n) || payload(n))`` where the header is the
JSON array ``[stream_id, version, event_id, event_type, schema_version, recorded_at]``
(self-delimiting, so header and payload cannot be confused). Changing, removing or
reordering any event of a stream changes every hash after it.

This module is the one definition of what the chain covers: :func:`chain_hash` names
the fields and their order; the writer hashes a new append with :func:`chain_of`, and
everything that checks stored or imported events (the audit, removal, import) walks a
stream with :func:`walk_chain` or hashes one event with :func:`event_hash`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from .batch import EncodedEvent
from .records import stored_bytes

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


# An event whose hash is checked: a stored row of ``convstore_events`` (whose payload
# may be the text an edit outside convstore left, see stored_bytes) or an
# ImportedEvent; it has the fields the hash covers, and the ``hash`` recorded with it.
Recorded = Any


def event_hash(previous: str, event: Recorded) -> str:
    """The chain hash of ``event`` after ``previous``, recomputed from its fields."""
    return chain_hash(
        previous,
        stream_id=event.stream_id,
        version=event.version,
        event_id=event.event_id,
        event_type=event.event_type,
        schema_version=event.schema_version,
        recorded_at=event.recorded_at,
        payload=stored_bytes(event.payload),
    )


def chain_of(
    previous: str,
    stream_id: str,
    first_version: int,
    recorded_at: int,
    events: Sequence[EncodedEvent],
) -> list[str]:
    """The hashes of ``events`` appended to a stream whose head hash is ``previous``,
    the first at ``first_version``, all recorded at ``recorded_at``."""
    digests = []
    for offset, enc in enumerate(events):
        previous = chain_hash(
            previous,
            stream_id=stream_id,
            version=first_version + offset,
            event_id=enc.event_id,
            event_type=enc.event_type,
            schema_version=enc.schema_version,
            recorded_at=recorded_at,
            payload=enc.payload,
        )
        digests.append(previous)
    return digests


@dataclass(frozen=True, slots=True)
class Link:
    """One event of a stream as :func:`walk_chain` checks it.

    ``expected_version`` is the version that should come here (one after the previous
    event's); ``sound`` whether the stored hash is ``H(previous stored hash, its
    fields)``; ``recomputed`` the chain recomputed from genesis up to this event (what a
    checkpoint recorded, if nothing was changed); ``error`` why the hash could not be
    computed at all (a hash that is not hex, a bad field), else None."""

    event: Any
    expected_version: int
    sound: bool
    recomputed: str
    error: str | None


def walk_chain(
    events: Iterable[Recorded], *, previous: str = GENESIS, version: int = 0
) -> Iterator[Link]:
    """Each event of one stream, in version order, with its link checked, after the
    head ``(version, previous)`` (a new stream's by default): the one chain-check loop
    (the audit reports every broken link; removal and import refuse at the first)."""
    stored_previous = previous  # the chain as stored: each link checked on its own
    recomputed = previous  # the chain recomputed from the start
    expected = version + 1
    for event in events:
        error = None
        sound = False
        try:
            link = event_hash(stored_previous, event)
            # While the stored chain is sound the two chains are the same: hash once.
            recomputed = link if recomputed == stored_previous else event_hash(recomputed, event)
            sound = link == event.hash
        except (TypeError, ValueError) as failure:
            error = str(failure)
        yield Link(event, expected, sound, recomputed, error)
        stored_previous = str(event.hash)
        expected = event.version + 1

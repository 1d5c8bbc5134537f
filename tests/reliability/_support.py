"""What the reliability tests share: their size, and an audit of a database."""

from __future__ import annotations

import os

from eventstore import EventStore
from projections import maintenance

from ..eventstore.chain_check import assert_chain_valid

# The long variants (``.ci/run`` sets this): more kills, operations and examples.
LONG = os.environ.get("CONVSTORE_LONG_TESTS", "") == "1"


def sized(short: int, long: int) -> int:
    """``long`` under CONVSTORE_LONG_TESTS=1, else ``short``."""
    return long if LONG else short


async def audit(store: EventStore) -> int:
    """Check every stream's hash chain and that the projections equal a replay of the
    log (what ``convstore DB audit`` checks); return the number of events checked."""
    events = 0
    for info in await store.list_streams():
        stream = await store.read_stream(info.stream_id)
        assert [e.version for e in stream] == list(range(1, len(stream) + 1))
        assert assert_chain_valid(stream) == info.head_hash, info.stream_id
        events += len(stream)
    report = await maintenance.verify(store)
    assert report.differences == (), report.differences
    return events

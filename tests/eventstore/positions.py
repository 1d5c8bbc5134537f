"""What every backend promises of positions, and what only the gapless ones add."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from eventstore import EventStore


def assert_positions(store: EventStore, positions: Sequence[int], *, first: int = 1) -> None:
    """``positions`` (in reading order) are unique and increasing; on a backend with
    dense positions they are exactly ``first``, ``first + 1``, …"""
    assert all(a < b for a, b in itertools.pairwise(positions)), positions
    assert all(p > 0 for p in positions)
    if store.dense_positions:
        assert list(positions) == list(range(first, first + len(positions)))

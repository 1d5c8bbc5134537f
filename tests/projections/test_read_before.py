"""HistoryProjector.read_before: a page of a branch further back, on every backend, on
a branch of its own items and on one that shares its parent's (segments)."""

from __future__ import annotations

from eventstore import EventStore
from sessions import StoreSession
from sessions.base import HISTORY
from sessions.branching import BranchingSession

from ..conftest import Backend


async def pages_back(store: EventStore, sid: str, branch: str, size: int) -> list[bytes]:
    """Every item of a branch, read newest page first with read_before."""
    newest = await store.run(lambda conn: HISTORY.read_entries(conn, sid, branch, size))
    found = list(newest)
    for _ in range(100):  # (a read_before that never reaches the start fails below)
        if not newest:
            break
        before = newest[0][0]
        newest = await store.run(
            lambda conn, before=before: HISTORY.read_before(conn, sid, branch, before, size)
        )
        assert len(newest) <= size
        found = newest + found
    assert not newest, "read_before never reached the start of the branch"
    return [item for _, item in found]


async def test_pages_back_through_a_branch_and_its_parent(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    session = BranchingSession("s", store)
    for n in range(7):
        await session.add_items(
            [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
        )
    await session.pop_item()  # a hole in the middle of main's keys
    await session.add_items([{"role": "assistant", "content": "a6 again"}])
    branch = await session.create_branch_from_turn(4, "b")  # shares turns 1-3
    await session.add_items([{"role": "user", "content": f"b{n}"} for n in range(5)])
    for name in ("main", branch):
        everything = await store.run(
            lambda conn, name=name: HISTORY.read_items(conn, "s", name, None)
        )
        for size in (1, 3, 4, 50):
            assert await pages_back(store, "s", name, size) == everything, (name, size)
    plain = StoreSession("p", store)
    await plain.add_items([{"n": n} for n in range(10)])
    everything = await store.run(lambda conn: HISTORY.read_items(conn, "p", "main", None))
    assert await pages_back(store, "p", "main", 4) == everything

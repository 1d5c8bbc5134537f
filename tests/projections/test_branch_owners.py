"""``branch_owners``: the branches a stream has rows of, found by index probes, as
``SELECT DISTINCT`` finds them, on every backend."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from eventstore import BranchCreated, ItemsAdded, SessionCleared, encode_items
from projections import HistoryProjector
from projections.base import branch_owners

from ..conftest import Backend

HISTORY = HistoryProjector()


def added(items: list[Any], branch: str = "main") -> ItemsAdded:
    return ItemsAdded(items=encode_items(items), branch_id=branch)


async def distinct_owners(backend_store: Any, stream_id: str) -> list[str]:
    t = HISTORY.items
    query = select(t.c.branch_id).where(t.c.stream_id == stream_id).distinct()
    return sorted(await backend_store.run(lambda c: list(c.execute(query).scalars())))


async def test_the_owners_of_a_stream_are_its_distinct_branch_ids(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("a", [added(["m1", "m2", "m3"])])
    for name in ("zeta", "alpha", "m"):
        await store.append("a", [BranchCreated(name, "main", fork_seq=0)])
        await store.append("a", [added([f"{name}1", f"{name}2"], branch=name)])
    await store.append("b", [added(["other"])])  # another stream's rows are not counted
    await store.append("c", [BranchCreated("lonely", "main", fork_seq=0)])  # no rows at all

    def owners(stream_id: str) -> Any:
        return store.run(lambda c: branch_owners(c, HISTORY.items, stream_id))

    assert await owners("a") == await distinct_owners(store, "a") == ["alpha", "m", "main", "zeta"]
    assert await owners("b") == ["main"]
    assert await owners("c") == await owners("nothing") == []


async def test_a_clear_of_every_branch_empties_each_one(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("a", [added(["m1", "m2"])])
    for name in ("x", "y"):
        await store.append("a", [BranchCreated(name, "main", fork_seq=0)])
        await store.append("a", [added([f"{name}1"], branch=name)])
    await store.append("a", [SessionCleared(branch_id=None)])
    for branch in ("main", "x", "y"):
        assert await store.run(lambda c, b=branch: HISTORY.read_items(c, "a", b, None)) == []

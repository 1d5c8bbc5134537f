"""The history projection: the table the append keeps equals the pure fold of the log."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, update

from eventstore import (
    ItemPopped,
    ItemsAdded,
    SessionCleared,
    SessionStarted,
    decode_item,
    encode_items,
)
from projections import HistoryProjector, fold, rebuild, verify
from projections.history import HistoryState, apply, item_seq

from ..conftest import Backend

HISTORY = HistoryProjector()


def added(*items: Any, branch: str = "main") -> ItemsAdded:
    return ItemsAdded(items=encode_items(items), branch_id=branch)


def items_of(state: HistoryState, branch: str = "main") -> list[Any]:
    return [decode_item(raw) for raw in state.items(branch)]


def test_fold_adds_pops_and_clears() -> None:
    state = HistoryState()
    state = apply(state, added({"n": 1}, {"n": 2}), version=1)
    state = apply(state, added({"n": 3}), version=2)
    assert items_of(state) == [{"n": 1}, {"n": 2}, {"n": 3}]
    popped = apply(state, ItemPopped(seq=item_seq(2, 0)), version=3)
    assert items_of(popped) == [{"n": 1}, {"n": 2}]
    assert items_of(state) == [{"n": 1}, {"n": 2}, {"n": 3}], "apply must not mutate"
    cleared = apply(popped, SessionCleared(), version=4)
    assert items_of(cleared) == []
    assert items_of(apply(cleared, added({"n": 4}), version=5)) == [{"n": 4}]


def test_fold_keeps_branches_apart() -> None:
    state = apply(HistoryState(), added({"a": 1}), version=1)
    state = apply(state, added({"b": 1}, branch="b"), version=2)
    state = apply(state, SessionCleared(branch_id="main"), version=3)
    assert items_of(state) == []
    assert items_of(state, "b") == [{"b": 1}]


def test_item_keys_increase_along_a_stream() -> None:
    keys = [item_seq(v, i) for v in range(1, 50) for i in (0, 1, 7, (1 << 20) - 1)]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


async def test_table_tracks_each_append(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append(
        "s", [added({"n": 1}), added({"n": 2}, {"n": 3})], on_new_stream=[SessionStarted()]
    )
    rows = await store.run(lambda c: HISTORY.read_items(c, "s", "main", None))
    assert [msgspec.json.decode(r) for r in rows] == [{"n": 1}, {"n": 2}, {"n": 3}]
    newest = await store.run(lambda c: HISTORY.read_items(c, "s", "main", 2))
    assert [msgspec.json.decode(r) for r in newest] == [{"n": 2}, {"n": 3}]
    seq, item = await store.run(lambda c: HISTORY.read_top(c, "s", "main"))  # type: ignore[misc]
    assert msgspec.json.decode(item) == {"n": 3}
    assert seq == item_seq(3, 1)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(0, 99), min_size=1, max_size=3)),
        st.tuples(st.just("pop"), st.none()),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=25,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
async def test_live_table_equals_fold_and_rebuild(
    backend: Backend, ops: list[tuple[str, Any]]
) -> None:
    """Guarantee 5: live table == fold of the log == rebuild from the log."""
    store = backend.store(projectors=(HISTORY,))
    stream = f"s{id(ops)}"
    for op, arg in ops:
        if op == "add":
            await store.append(stream, [added(*({"v": v} for v in arg))])
        elif op == "pop":
            top = await store.run(lambda c: HISTORY.read_top(c, stream, "main"))
            if top is not None:
                await store.append(stream, [ItemPopped(seq=top[0])])
        else:
            await store.append(stream, [SessionCleared()])
    live = await store.run(lambda c: HISTORY.read_items(c, stream, "main", None))
    folded = fold(await store.read_stream(stream)) if ops else HistoryState()
    assert live == folded.items()
    report = await verify(store)
    assert report.ok, [str(d) for d in report.differences]
    await rebuild(store)
    assert await store.run(lambda c: HISTORY.read_items(c, stream, "main", None)) == live


async def test_verify_reports_every_difference(backend: Backend) -> None:
    store = backend.store(projectors=(HISTORY,))
    await store.append("s", [added({"n": 1}, {"n": 2}, {"n": 3})])
    t = HISTORY.items

    def tamper(conn: Any) -> None:
        conn.execute(delete(t).where(t.c.seq == item_seq(1, 0)))
        conn.execute(update(t).where(t.c.seq == item_seq(1, 1)).values(item=b'{"n":20}'))
        conn.execute(
            insert(t).values(
                stream_id="s", branch_id="main", seq=5, position=1, item=b"{}", kind="other"
            )
        )

    await store.run(tamper, write=True)
    report = await verify(store)
    assert not report.ok
    found = {d.key: (d.live is not None, d.rebuilt is not None) for d in report.differences}
    assert found == {
        ("s", "main", item_seq(1, 0)): (False, True),  # deleted from the live table
        ("s", "main", item_seq(1, 1)): (True, True),  # changed
        ("s", "main", 5): (True, False),  # not in the log
    }
    await rebuild(store)
    assert (await verify(store)).ok
    rows = await store.run(lambda c: HISTORY.read_items(c, "s", "main", None))
    assert [msgspec.json.decode(r) for r in rows] == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_projection_added_to_an_existing_log_starts_consistent(
    shared_backend: Backend,
) -> None:
    """Needs a second store on one database, which ``:memory:`` cannot give."""
    bare = shared_backend.store()
    await bare.append("s", [added({"n": 1})])
    await bare.close()
    store = shared_backend.store(projectors=(HISTORY,))
    rows = await store.run(lambda c: HISTORY.read_items(c, "s", "main", None))
    assert [msgspec.json.decode(r) for r in rows] == [{"n": 1}]
    assert (await verify(store)).ok
